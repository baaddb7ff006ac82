/*
 * The strict-syntax check of scripts/check_strict_syntax: every Nextflow script (*.nf) and config
 * (*.config) under the given paths, parsed and analysed by nf-lang's ScriptParser and ConfigParser
 * (the parser Nextflow 25.04+ runs with NXF_SYNTAX_PARSER=v2 and 26.04 runs by default), all in one
 * JVM. Prints `file:line:col: message` per error and `N file(s) checked, M failed` on stderr; exits
 * 1 when a file fails, 2 on usage errors.
 *
 * Skipped: nf-test files (*.nf.test, nf-test.config: nf-test's own DSL) and the walk's hidden
 * folders, node_modules, __pycache__ and Nextflow `work` folders.
 *
 * One finding is not an error: "`meta` is not defined" inside a config file. nf-lang 25.04.0 does
 * not know that process settings' closures see the task's inputs (`ext.prefix = { meta.id }`, as
 * every nf-core pipeline writes), while later nf-lang releases do; Nextflow itself evaluates those
 * closures with the task's inputs.
 */
import java.io.File;
import java.io.IOException;
import java.nio.file.*;
import java.util.*;
import java.util.stream.*;
import org.codehaus.groovy.control.SourceUnit;
import org.codehaus.groovy.control.messages.*;
import org.codehaus.groovy.syntax.SyntaxException;

public class StrictSyntax {

    static final Set<String> SKIP_DIRS = Set.of("node_modules", "__pycache__", "work");
    static final String FALSE_POSITIVE = "`meta` is not defined";

    public static void main(String[] args) throws IOException {
        List<Path> files = new ArrayList<>();
        for (String arg : args) {
            Path path = Paths.get(arg);
            if (Files.isDirectory(path)) {
                try (Stream<Path> walk = Files.walk(path)) {
                    walk.filter(p -> Files.isRegularFile(p) && wanted(p) && !p.getFileName().toString().startsWith(".") && !skipped(path, p)).sorted().forEach(files::add);
                }
            } else if (Files.isRegularFile(path)) {
                files.add(path);
            } else {
                System.err.println("check_strict_syntax: no such file or folder: " + arg);
                System.exit(2);
            }
        }
        var scripts = new nextflow.script.control.ScriptParser();
        var configs = new nextflow.config.control.ConfigParser();
        Map<SourceUnit, Path> units = new LinkedHashMap<>();
        for (Path file : files) {
            File f = file.toFile();
            units.put(f.getName().endsWith(".config") ? configs.parse(f) : scripts.parse(f), file);
        }
        scripts.analyze();
        configs.analyze();
        int failed = 0;
        for (var entry : units.entrySet()) {
            boolean config = entry.getValue().toString().endsWith(".config");
            Set<String> lines = new LinkedHashSet<>();
            var collector = entry.getKey().getErrorCollector();
            for (Message message : collector.hasErrors() ? collector.getErrors() : List.<Message>of()) {
                String text = describe(message);
                if (!(config && text.endsWith(FALSE_POSITIVE))) {
                    lines.add(shown(entry.getValue()) + ":" + text);
                }
            }
            if (!lines.isEmpty()) {
                failed++;
                lines.forEach(System.out::println);
            }
        }
        System.err.println(files.size() + " file(s) checked, " + failed + " failed (nf-lang strict syntax)");
        System.exit(failed == 0 ? 0 : 1);
    }

    // a file under the working directory by its relative path, others as given
    static Path shown(Path file) {
        Path cwd = Paths.get("").toAbsolutePath();
        Path absolute = file.toAbsolutePath().normalize();
        return absolute.startsWith(cwd) ? cwd.relativize(absolute) : file;
    }

    static boolean wanted(Path p) {
        String name = p.getFileName().toString();
        return (name.endsWith(".nf") || name.endsWith(".config")) && !name.equals("nf-test.config");
    }

    static boolean skipped(Path root, Path p) {
        for (Path part : root.relativize(p.getParent() == null ? p : p.getParent())) {
            String name = part.toString();
            if (name.startsWith(".") && !name.equals(".") && !name.equals("..") || SKIP_DIRS.contains(name)) {
                return true;
            }
        }
        return false;
    }

    static String describe(Message message) {
        if (message instanceof SyntaxErrorMessage s) {
            SyntaxException e = s.getCause();
            return e.getStartLine() + ":" + e.getStartColumn() + ": " + e.getOriginalMessage();
        }
        if (message instanceof ExceptionMessage x) {
            return "1:1: " + x.getCause();
        }
        return "1:1: " + message;
    }
}
