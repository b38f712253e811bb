"""Exit codes of vmgenctl (design §3); scripts rely on them."""

OK = 0
PENDING_OR_FAILED = 1  # status: hooks pending/failed; check/retry: hooks failed; hooks validate
USAGE = 2              # bad command line (click's own code for usage errors)
NO_DEVICE = 3          # no vmgenc device (driver not attached)
EXPECT_FAILED = 4      # check --expect: the generation is not the one expected
TIMEOUT = 5            # wait --timeout ran out
CONFIG = 6             # rc.conf knob malformed or unknown value
ENVIRONMENT = 7        # no usable backend (not FreeBSD, no simulated VM), permissions, I/O
STATE = 8              # the history database or the simulated VM's state is unusable
INTERRUPTED = 130      # SIGINT (128 + 2), as sh reports a command killed by ^C
STDOUT_CLOSED = 141    # SIGPIPE (128 + 13): the output's reader went away (| head)
