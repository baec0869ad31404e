"""The bundle's entry point: `assistant` with no arguments opens the window, like the pip-installed command.

Two more jobs in the frozen app:
- The agent's Python sandbox (assistant/agent/sandbox.py) starts `sys.executable -I -B boot.py program.py`,
  and the benchmarks `sys.executable -m bench.llm` or `-c CODE`. In a bundle sys.executable is this
  program, not a Python interpreter, so started that way it does what `python` would, with the
  interpreter and libraries the bundle carries.
- On Linux it gives the programs the app starts the user's LD_LIBRARY_PATH back (below).
"""

import os
import sys

_PYTHON_FLAGS = {"-I", "-B", "-E", "-s", "-S", "-u", "-P", "-O", "-OO", "-q"}


def _run_as_python(argv: list[str]) -> int | None:
    """Run `launcher [flags] script.py | -m module | -c code [args]` as Python would; None for anything else.

    The agent's sandbox runs `sys.executable -I -B boot.py program.py`, and the benchmarks
    (`assistant bench ...`) run `sys.executable -m bench.llm ...` or `-c CODE`.
    """
    at = 1
    while at < len(argv) and (argv[at] in _PYTHON_FLAGS or argv[at].startswith("-X")):
        at += 2 if argv[at] == "-X" else 1  # -X takes a value: -X utf8 or -Xutf8
    if at >= len(argv):
        return None
    import runpy

    sys.dont_write_bytecode = True
    target = argv[at]
    try:
        if target in ("-m", "-c") and at + 1 < len(argv):
            if target == "-m":
                sys.argv = [argv[at + 1], *argv[at + 2:]]
                runpy.run_module(argv[at + 1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = ["-c", *argv[at + 2:]]
                exec(compile(argv[at + 1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        elif target.endswith(".py") and at > 1:  # a bare `assistant notes.py` stays a CLI mistake
            sys.argv = argv[at:]
            runpy.run_path(target, run_name="__main__")
        else:
            return None
    except SystemExit as exc:
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except BaseException as exc:  # noqa: BLE001 - report it as python would, without the launcher's frames
        import traceback

        tb, own = exc.__traceback__, _run_as_python.__code__.co_filename
        while tb is not None and (tb.tb_frame.f_code.co_filename == own
                                  or tb.tb_frame.f_code.co_filename.endswith(("runpy.py", "<frozen runpy>"))):
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
        return 1
    return 0


def _restore_library_path() -> None:
    """Give the programs this one starts the library path the user had, not the bundle's.

    On Linux the bootloader starts the app with LD_LIBRARY_PATH=<bundle>/_internal (the original value
    kept in LD_LIBRARY_PATH_ORIG). This process needs nothing more from the variable (the loader read it
    at start), but every child would inherit it: a PDF viewer, xdg-open, bubblewrap would load the
    bundle's glib, OpenSSL or libstdc++ instead of their own, and can crash on another distribution.
    """
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original:
        os.environ["LD_LIBRARY_PATH"] = original
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)


if __name__ == "__main__":
    if getattr(sys, "frozen", False):
        import multiprocessing

        if sys.platform.startswith("linux"):
            _restore_library_path()

        multiprocessing.freeze_support()  # a no-op unless a library starts worker processes
        rc = _run_as_python(sys.argv)
        if rc is not None:
            raise SystemExit(rc)
    from assistant.cli import main

    raise SystemExit(main())
