import groovy.json.JsonSlurper

/*
    What the module nf-tests snapshot (nf-test.config's libDir): content that a seed fixes on
    every machine. Tables with floats as their header and row count (the floats of a trained
    model differ between machines in their late digits) and, for DE tables, each gene's fold-change
    sign; an .h5ad as its structure (tests/h5ad_structure.py), as
    nf-core/scdownstream snapshots AnnData. Tables without floats go into snapshots as files
    (nf-test records their md5).
*/
class Snapshots {

    // "<name>: <header> (<n> rows)"
    static String table(Object path) {
        def file = new File(path.toString())
        def lines = file.readLines()
        return "${file.name}: ${lines[0]} (${lines.size() - 1} rows)".toString()
    }

    // "<name>: <column> signs <gene><+|-|0> ..." by gene: which genes a table holds and the sign of
    // `column`, which a seed fixes on every machine while the floats' late digits are not (0: within
    // 1e-3 of zero, where those digits could flip it). A flipped fold change changes it.
    static String signs(Object path, String column) {
        def file = new File(path.toString())
        def lines = file.readLines()
        def header = lines[0].split(',', -1) as List
        def gene = header.indexOf('gene'), value = header.indexOf(column)
        if (gene < 0 || value < 0) {
            throw new RuntimeException("${file.name}: no gene or ${column} column")
        }
        def cells = lines.drop(1).collect { line -> line.split(',', -1) }.collect { row ->
            def x = row[value] as double
            "${row[gene]}${x > 1e-3 ? '+' : x < -1e-3 ? '-' : '0'}".toString()
        }.sort()
        return "${file.name}: ${column} signs ${cells.join(' ')}".toString()
    }

    // a glob output's files: one file or a list of them
    static List fileList(Object files) {
        return files instanceof List ? files : [ files ]
    }

    // [ n_obs, n_vars, obs, var, obsm, layers, uns ] of an .h5ad, read by the project's python3
    static Map h5ad(Object path) {
        def script = new File('tests/h5ad_structure.py').absolutePath
        def proc = ['python3', script, path.toString()].execute()
        def out = new StringBuilder(), err = new StringBuilder()
        proc.waitForProcessOutput(out, err)
        if (proc.exitValue() != 0) {
            throw new RuntimeException("h5ad_structure.py ${path}: ${err}")
        }
        return new TreeMap(new JsonSlurper().parseText(out.toString()) as Map)
    }
}
