/*
 * GroovyParse -- static Groovy 4 syntax check used by scripts/check_groovy_syntax.
 *
 * Parses every given file (directories are walked for *.nf, *.config and
 * *.nf.test) with Groovy's CompilationUnit up to the CONVERSION phase (parse +
 * AST building, no class resolution, no Nextflow AST transforms), one
 * CompilationUnit per file, all in this one JVM. Prints
 *     file:line:col: message
 * for every syntax error and exits 1 if any file failed (2 on usage errors).
 *
 * Nextflow DSL2 scripts, nf-test files and ConfigSlurper-style .config files
 * are all plain Groovy syntax at this phase (process/workflow blocks are
 * method calls taking closures; `input:`/`withName:` are statement labels).
 *
 * Skipped while walking: hidden folders (.git, .venv, .nextflow, .nf-test...),
 * node_modules, __pycache__, and Nextflow work folders (a `work` folder next to
 * a .nextflow folder or .nextflow.log).
 */
import java.io.IOException;
import java.nio.file.*;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.*;

import org.codehaus.groovy.control.CompilationUnit;
import org.codehaus.groovy.control.CompilerConfiguration;
import org.codehaus.groovy.control.MultipleCompilationErrorsException;
import org.codehaus.groovy.control.Phases;
import org.codehaus.groovy.control.messages.ExceptionMessage;
import org.codehaus.groovy.control.messages.Message;
import org.codehaus.groovy.control.messages.SimpleMessage;
import org.codehaus.groovy.control.messages.SyntaxErrorMessage;
import org.codehaus.groovy.syntax.SyntaxException;

public class GroovyParse {

    static boolean wanted(Path p) {
        String n = p.getFileName().toString();
        return n.endsWith(".nf") || n.endsWith(".config") || n.endsWith(".nf.test");
    }

    static boolean skipDir(Path dir, Path root) {
        if (dir.equals(root)) return false;
        String n = dir.getFileName().toString();
        if (n.startsWith(".") || n.equals("node_modules") || n.equals("__pycache__")) return true;
        if (n.equals("work")) {
            Path parent = dir.getParent();
            return parent != null && (Files.isDirectory(parent.resolve(".nextflow"))
                                       || Files.exists(parent.resolve(".nextflow.log")));
        }
        return false;
    }

    static void collect(Path root, List<Path> out) throws IOException {
        if (Files.isRegularFile(root)) { out.add(root); return; }
        if (!Files.isDirectory(root)) throw new NoSuchFileException(root.toString());
        List<Path> found = new ArrayList<>();
        Files.walkFileTree(root, new SimpleFileVisitor<Path>() {
            @Override public FileVisitResult preVisitDirectory(Path d, BasicFileAttributes a) {
                return skipDir(d, root) ? FileVisitResult.SKIP_SUBTREE : FileVisitResult.CONTINUE;
            }
            @Override public FileVisitResult visitFile(Path f, BasicFileAttributes a) {
                // hidden files are not sources (nf-test writes .nf-test-<hash>.nf wrappers at the root while it runs)
                if (a.isRegularFile() && wanted(f) && !f.getFileName().toString().startsWith(".")) found.add(f);
                return FileVisitResult.CONTINUE;
            }
            @Override public FileVisitResult visitFileFailed(Path f, IOException e) {
                return FileVisitResult.CONTINUE;
            }
        });
        Collections.sort(found);
        out.addAll(found);
    }

    /** Returns the error lines for one file (empty list: parsed fine). */
    static List<String> check(Path file, String shown) {
        List<String> errors = new ArrayList<>();
        CompilerConfiguration conf = new CompilerConfiguration();
        conf.setTolerance(50);               // collect several errors per file
        CompilationUnit cu = new CompilationUnit(conf);
        try {
            cu.addSource(file.toFile());
            cu.compile(Phases.CONVERSION);
        } catch (MultipleCompilationErrorsException e) {
            for (Message m : e.getErrorCollector().getErrors()) {
                if (m instanceof SyntaxErrorMessage) {
                    SyntaxException se = ((SyntaxErrorMessage) m).getCause();
                    errors.add(shown + ":" + se.getStartLine() + ":" + se.getStartColumn() + ": "
                               + oneLine(se.getOriginalMessage()));
                } else if (m instanceof ExceptionMessage) {
                    Exception c = ((ExceptionMessage) m).getCause();
                    errors.add(shown + ":1:1: " + oneLine(String.valueOf(c)));
                } else if (m instanceof SimpleMessage) {
                    errors.add(shown + ":1:1: " + oneLine(((SimpleMessage) m).getMessage()));
                } else {
                    errors.add(shown + ":1:1: " + oneLine(String.valueOf(m)));
                }
            }
            if (errors.isEmpty()) errors.add(shown + ":1:1: " + oneLine(e.getMessage()));
        } catch (Exception e) {
            errors.add(shown + ":1:1: " + oneLine(e.toString()));
        }
        return errors;
    }

    static String oneLine(String s) {
        return s == null ? "" : s.replaceAll("\\s*[\\r\\n]+\\s*", " ").trim();
    }

    public static void main(String[] args) throws Exception {
        boolean quiet = false;
        List<String> roots = new ArrayList<>();
        for (String a : args) {
            if (a.equals("-q") || a.equals("--quiet")) quiet = true;
            else roots.add(a);
        }
        if (roots.isEmpty()) {
            System.err.println("usage: GroovyParse [-q] PATH...");
            System.exit(2);
        }
        List<Path> files = new ArrayList<>();
        for (String r : roots) {
            try {
                collect(Paths.get(r), files);
            } catch (NoSuchFileException e) {
                System.err.println(r + ": no such file or directory");
                System.exit(2);
            }
        }
        Path cwd = Paths.get("").toAbsolutePath();
        int failed = 0;
        for (Path f : files) {
            Path abs = f.toAbsolutePath().normalize();
            String shown = abs.startsWith(cwd) ? cwd.relativize(abs).toString() : abs.toString();
            List<String> errs = check(f, shown);
            if (!errs.isEmpty()) {
                failed++;
                errs.forEach(System.out::println);
            }
        }
        if (!quiet || failed > 0) {
            System.err.println("check_groovy_syntax: " + files.size() + " file(s) parsed, " + failed + " failed"
                               + " (Groovy " + groovy.lang.GroovySystem.getVersion() + ", phase CONVERSION)");
        }
        System.exit(failed > 0 ? 1 : 0);
    }
}
