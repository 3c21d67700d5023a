"""What every entry point shares: process settings, absl flag parsing, errors as one line.

    app.run(main, program="bin/train")

Process settings, made before `main` runs (never at import):
- `OPENBLAS_NUM_THREADS=1` unless the user exported it: on CPU, jaxlib's Cholesky and triangular
  solves (every shift's N x N solve) call scipy's bundled OpenBLAS, loaded at the first solve, whose
  worker threads fight XLA's own thread pool for the cores (that doubled a training step's time);
- orbax's INFO lines (dozens per checkpoint) are dropped from the absl log; its warnings still show;
- the matmul precision of `config.model.matmul_precision` (`set_matmul_precision`, called by the
  entry points that take a config, once their flags are parsed).

Exit codes: 0 done; 2 bad input or usage (a flag, a config field, a data, model or request file);
1 a failure while running (a non-finite loss, an edit that cannot be applied, a bug). The error is
printed as `bin/train: error: <message>`; the Python traceback only with `--debug`.
"""

import logging
import os
import sys
import traceback

import jax
from absl import app, flags
from absl import logging as absl_logging

BAD_INPUT = 2
FAILURE = 1


def exit_code(error: BaseException) -> int:
    """2 for bad input (ValueError, OSError such as a missing file, a usage error), 1 otherwise."""
    if isinstance(error, (ValueError, OSError, app.UsageError, flags.Error)):
        return BAD_INPUT
    return FAILURE


class _QuietOrbax(logging.Filter):
    def filter(self, record):
        return record.levelno >= logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def _process_settings() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    absl_logging.get_absl_logger().addFilter(_QuietOrbax())


def set_matmul_precision(config) -> None:
    """The process's `jax_default_matmul_precision`, from `config.model.matmul_precision`."""
    jax.config.update("jax_default_matmul_precision", config.model.matmul_precision)


def _report(program: str, error: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(error)
    message = str(error) or type(error).__name__
    if exit_code(error) == FAILURE and not isinstance(error, FloatingPointError):
        message = f"{type(error).__name__}: {message} (rerun with --debug for the traceback)"
    print(f"{program}: error: {message}", file=sys.stderr)


def run(main, *, program: str) -> None:
    """`absl.app.run(main)` with a `--debug` flag, flag errors and exceptions reported as above.

    The caller defines its other flags first.
    """
    flags.DEFINE_bool("debug", False, "On an error, also print the Python traceback.")

    def parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            _report(program, error, debug="--debug" in argv)
        except AttributeError as error:  # ml_collections: an override of a field the config lacks.
            if "--debug" in argv:
                traceback.print_exception(error)
            hint = " ".join(str(error).replace("\\n", " ").replace("\\'", "").strip("'\"").split())
            print(f"{program}: error: unknown config field in a --config.* flag: {hint}", file=sys.stderr)
        sys.exit(BAD_INPUT)

    def guarded_main(argv):
        _process_settings()
        try:
            main(argv)
        except Exception as error:  # Reported as one line; --debug adds the traceback.
            _report(program, error, flags.FLAGS.debug)
            sys.exit(exit_code(error))

    app.run(guarded_main, flags_parser=parse_flags)
