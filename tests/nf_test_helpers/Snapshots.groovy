import groovy.json.JsonSlurper

/*
    What the module nf-tests snapshot (nf-test.config's libDir): content that a seed fixes on
    every machine. Tables with floats as their header and row count (the floats of a trained
    model differ between machines); an .h5ad as its structure (tests/h5ad_structure.py), as
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
