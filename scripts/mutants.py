"""Mutation testing of one module with mutmut 3 (``make mutants MODULE=lib/attnrepro/train/schedules.py``).

mutmut copies the package into ``mutants/`` and rewrites every function of the named module into a trampoline that
runs the original or one mutant; each mutant is then run against the module's fast tests (``FAST_TESTS`` below, or
``TESTS=...``), only those tests that call the mutated function, stopping at the first failure. A mutant that no test
kills *survived*: read it (``python scripts/mutants.py show NAME``) and add a test or argue it equivalent.

mutmut knows the ``src/`` layout, not this package's ``lib/``; this wrapper makes the two differences up (mutant names
are ``attnrepro.x`` rather than ``lib.attnrepro.x``, and the mutated copy ``mutants/lib`` comes before the
installed ``lib`` on ``sys.path``) and passes the module and its tests to mutmut's config.

Usage:
    python scripts/mutants.py run lib/attnrepro/train/schedules.py [tests ...] [mutant names ...]
    python scripts/mutants.py results | show MUTANT | browse      (mutmut's own commands, on the last run)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

#: each module's fast tests: the tests a developer runs for that file (no slow end-to-end tests)
FAST_TESTS = {
    "lib/attnrepro/train/schedules.py": ["tests/train/test_train_schedules.py",
                                         "tests/train/test_train_properties.py"],
    "lib/attnrepro/train/loop.py": ["tests/train/test_train_loop.py", "tests/train/test_train_properties.py"],
    "lib/attnrepro/train/checkpoint.py": ["tests/train/test_train_loop.py", "tests/train/test_train_properties.py",
                                          "tests/test_io.py"],
    "lib/attnrepro/train/cuda.py": ["tests/train/test_train_loop.py", "tests/train/test_train_properties.py"],
    "lib/attnrepro/data/batching.py": ["tests/data/test_batching.py", "tests/data/test_data.py",
                                       "tests/data/test_data_properties.py"],
    "lib/attnrepro/data/__init__.py": ["tests/data/test_data.py", "tests/data/test_data_properties.py"],
    "lib/attnrepro/data/sources.py": ["tests/data/test_data.py"],
    "lib/attnrepro/analysis/claims.py": ["tests/analysis/test_claims.py"],
    "lib/attnrepro/pipeline/runstate.py": ["tests/pipeline/test_workflows.py"],
    "lib/attnrepro/pipeline/preflight.py": ["tests/pipeline/test_workflows.py", "tests/pipeline/test_pipeline.py"],
    "lib/attnrepro/pipeline/execution.py": ["tests/pipeline/test_workflows.py"],
    "lib/attnrepro/pipeline/grids.py": ["tests/pipeline/test_workflows.py",
                                        "tests/pipeline/test_pipeline.py"],
}


def tests_for(module: str) -> list[str]:
    if module in FAST_TESTS:
        return FAST_TESTS[module]
    # the mirrored test file: lib/attnrepro/<pkg>/<name>.py -> tests/<pkg>/test_<name>.py
    rel = Path(module).relative_to("lib/attnrepro")
    guess = Path("tests") / rel.parent / f"test_{rel.stem}.py"
    if guess.is_file():
        return [str(guess)]
    raise SystemExit(f"no fast tests known for {module}; name them: make mutants MODULE={module} TESTS='tests/...'")


def patch_mutmut(module: str | None, tests: list[str]) -> None:
    import mutmut.configuration as conf
    import mutmut.utils.format_utils as fu
    import mutmut.utils.file_utils as files

    load = conf._load_config

    def load_config():
        cfg = load()
        if module is not None:
            cfg.only_mutate = [module]
            cfg.pytest_add_cli_args_test_selection = list(tests)
        return cfg
    conf._load_config = load_config
    conf.reset_config()

    name = fu.get_mutant_name

    def mutant_name(relative_source_path, mutant_method_name):
        p = Path(relative_source_path)
        if p.parts and p.parts[0] == "lib":
            p = Path(*p.parts[1:])
        return name(p, mutant_method_name)

    setup = files.setup_source_paths

    def setup_source_paths():
        setup()
        lib = Path("lib").resolve()
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != lib]
        sys.path.insert(0, str(Path("mutants/lib").absolute()))
        for m in [m for m in sys.modules if m == "attnrepro" or m.startswith("attnrepro.")]:
            del sys.modules[m]          # imported from the original lib before: import the mutated copy instead

    for mod in [m for k, m in list(sys.modules.items()) if k.startswith("mutmut")]:
        if getattr(mod, "get_mutant_name", None) is name:
            mod.get_mutant_name = mutant_name
        if getattr(mod, "setup_source_paths", None) is setup:
            mod.setup_source_paths = setup_source_paths


def main(argv: list[str]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import mutmut.__main__  # noqa: F401  (imports every module whose names are patched)
    from mutmut.__main__ import cli
    module, tests, args = None, [], list(argv)
    if args and args[0] == "run":
        if len(args) < 2 or not args[1].endswith(".py"):
            raise SystemExit("usage: scripts/mutants.py run lib/attnrepro/<module>.py [tests ...]")
        names = [a for a in args[2:] if a.startswith("attnrepro.")]       # re-run only these mutants
        module, tests = args[1], [a for a in args[2:] if a not in names] or tests_for(args[1])
        args = ["run", *(["--max-children", os.environ["MUTANTS_JOBS"]] if os.environ.get("MUTANTS_JOBS") else []),
                *names]
        print(f"mutating {module} against {' '.join(tests)}", flush=True)
        last = Path("mutants/.module")
        if Path("mutants").is_dir() and (not last.is_file() or last.read_text() != module):
            import shutil
            shutil.rmtree("mutants")    # another module's mutants and stats: start afresh
        Path("mutants").mkdir(exist_ok=True)
        last.write_text(module)
    patch_mutmut(module, tests)
    cli(args)


if __name__ == "__main__":
    main(sys.argv[1:])
