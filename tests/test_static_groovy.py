"""Static Groovy 4 parse check of every .nf / .config / .nf.test.

scripts/check_groovy_syntax parses files with Groovy's CompilationUnit up to the
CONVERSION phase in one JVM and reports ``file:line:col: message`` per error.
The Groovy jar is fetched once from Maven Central into ~/.cache/desweep/groovy.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKER = REPO / "scripts" / "check_groovy_syntax"
TIMEOUT = 600  # first call may fetch the Groovy jar from Maven Central
GROOVY_SUFFIXES = (".nf", ".config", ".nf.test")

GOOD_NF = """\
#!/usr/bin/env nextflow
include { FOO; BAR as BAZ } from './modules/foo'

process GREET {
    tag "${name}"
    publishDir params.outdir, mode: 'copy'

    input:
    val name

    output:
    path 'hi.txt', emit: txt

    script:
    \"\"\"
    echo "hi ${name}" > hi.txt
    \"\"\"
}

workflow SUB {
    take: ch
    main:
    GREET(ch) | map { it } | view
    emit:
    out = GREET.out.txt
}

workflow {
    SUB(Channel.of('a', 'b'))
}
"""

GOOD_CONFIG = """\
params { outdir = 'results' }
process {
    executor = 'local'
    withName: 'GREET' { cpus = 1 }
}
profiles { test { params.outdir = 'test' } }
"""

GOOD_NF_TEST = """\
nextflow_process {
    name "Test GREET"
    script "../main.nf"
    process "GREET"
    test("greets") {
        when { process { \"\"\" input[0] = 'x' \"\"\" } }
        then { assert process.success }
    }
}
"""

# the stray closing brace on line 9 is the syntax error
BROKEN_NF = """\
params.x = 1
process OK {
    script:
    "echo ok"
}
workflow {
    OK()
}
}
"""


def check(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHECKER), *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


def groovy_files_in_repo() -> list[str]:
    """The files the checker must find: what git tracks or would track (untracked, not ignored),
    named like Groovy sources, outside the hidden folders and files the walker skips."""
    proc = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                          capture_output=True, text=True, check=True)
    return [path for path in proc.stdout.splitlines()
            if path.endswith(GROOVY_SUFFIXES) and not any(part.startswith(".") for part in Path(path).parts)
            and (REPO / path).is_file()]


def test_repo_parses() -> None:
    proc = check(cwd=REPO)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    m = re.search(r"(\d+) file\(s\) parsed, 0 failed", proc.stderr)
    assert m, proc.stderr
    expected = groovy_files_in_repo()
    assert {"main.nf", "nextflow.config", "tests/nextflow/hello/main.nf"} <= set(expected), expected
    assert int(m.group(1)) == len(expected), f"parsed {m.group(1)} files, the repository has {len(expected)}: {expected}"


def test_hello_pipeline_parses() -> None:
    proc = check("tests/nextflow/hello/main.nf", cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 file(s) parsed, 0 failed" in proc.stderr


def test_good_dsl2_config_and_nf_test_parse(tmp_path: Path) -> None:
    (tmp_path / "main.nf").write_text(GOOD_NF)
    (tmp_path / "nextflow.config").write_text(GOOD_CONFIG)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "main.nf.test").write_text(GOOD_NF_TEST)
    proc = check(str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 file(s) parsed, 0 failed" in proc.stderr


def test_broken_nf_is_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "good.nf").write_text(GOOD_NF)
    (tmp_path / "broken.nf").write_text(BROKEN_NF)
    proc = check(str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = proc.stdout.strip().splitlines()
    assert errors, proc.stderr
    # only the broken file is reported, as file:line:col: message, on line 9
    assert all(line.startswith("broken.nf:") for line in errors), errors
    assert re.match(r"^broken\.nf:9:\d+: \S", errors[0]), errors
    assert "2 file(s) parsed, 1 failed" in proc.stderr


def test_absolute_path_when_outside_cwd(tmp_path: Path) -> None:
    bad = tmp_path / "sub" / "broken.nf"
    bad.parent.mkdir()
    bad.write_text(BROKEN_NF)
    proc = check(str(bad), cwd=REPO)
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"{bad}:9:"), proc.stdout


# --- Nextflow's strict syntax (nf-lang), the default parser from Nextflow 26.04 ---------------

STRICT_CHECKER = REPO / "scripts" / "check_strict_syntax"
#: removed from or deprecated in the strict syntax, which nf-lang reports only in part (a feature
#: flag it still knows, such as enable.dsl, is no error)
REMOVED_SYNTAX = re.compile(r"^\s*(import\s|nextflow\.enable\.dsl|nextflow\.preview\.)|\bswitch\s*\(", re.M)


def strict(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(STRICT_CHECKER), *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)


def nextflow_files_in_repo() -> list[str]:
    return [path for path in groovy_files_in_repo() if path.endswith((".nf", ".config")) and Path(path).name != "nf-test.config"]


def test_repo_passes_the_strict_syntax() -> None:
    proc = strict(cwd=REPO)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    m = re.search(r"(\d+) file\(s\) checked, 0 failed", proc.stderr)
    assert m and int(m.group(1)) == len(nextflow_files_in_repo()), (proc.stderr, nextflow_files_in_repo())


def test_no_removed_syntax_is_left() -> None:
    found = [f"{path}: {m.group(0).strip()}" for path in nextflow_files_in_repo()
             for m in REMOVED_SYNTAX.finditer((REPO / path).read_text())]
    assert not found, found


@pytest.mark.parametrize("code, message", [
    ("import groovy.json.JsonSlurper\n\nworkflow {\n    println(new JsonSlurper().parseText('{}'))\n}\n",
     "Groovy `import` declarations are not supported"),
    ("def kind(x) {\n    switch (x) {\n        case 1: return 'one'\n        default: return 'many'\n    }\n}\nworkflow {\n    println(kind(1))\n}\n",
     "Unexpected input"),
    ("nextflow.preview.topic = true\nworkflow {\n    println('hi')\n}\n", "Unrecognized feature flag 'nextflow.preview.topic'"),
])
def test_strict_syntax_errors_are_reported_with_file_and_line(code: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "main.nf").write_text(code)
    (tmp_path / "nextflow.config").write_text(GOOD_CONFIG)
    proc = strict(str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(rf"^main\.nf:\d+:\d+: .*{re.escape(message)}", proc.stdout, re.M), proc.stdout
    assert "2 file(s) checked, 1 failed" in proc.stderr


def test_strict_syntax_accepts_what_the_pipeline_writes(tmp_path: Path) -> None:
    (tmp_path / "main.nf").write_text(GOOD_NF.replace("include { FOO; BAR as BAZ } from './modules/foo'\n", ""))
    (tmp_path / "nextflow.config").write_text(GOOD_CONFIG + "process { withName: 'GREET' { ext.prefix = { \"${meta.id}\" } } }\n")
    proc = strict(str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
