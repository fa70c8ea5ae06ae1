"""Process exit codes shared by every command."""

PROMOTED = 0
ERROR = 1
BAD_INPUT = 2
ROLLED_BACK = 3
