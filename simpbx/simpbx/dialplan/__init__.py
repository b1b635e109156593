"""A faithful, refusing interpreter for the subset of Asterisk ``extensions.conf`` ICM uses.

Tests use it to run calls through the dialplan file ICM ships, unchanged, without a real
Asterisk.  Every behaviour was modelled on the Asterisk 18/20 C sources (the file and
function are named next to each piece), including their quirks, because a simulator that is
"nicer" than Asterisk would let broken dialplan pass the tests.  Whatever is not modelled is
refused with :class:`DialplanError` instead of being approximated.

One module per job:

* :mod:`~simpbx.dialplan.parser` (``main/config.c``, ``pbx/pbx_config.c``): the text into
  :mod:`~simpbx.dialplan.contexts`; :mod:`~simpbx.dialplan.plan`: the :class:`Dialplan` and
  its lookups (``main/pbx.c`` ``pbx_find_extension``, includes).
* :mod:`~simpbx.dialplan.patterns` (``main/pbx.c``): extension patterns (``_``,
  ``X Z N [..] . !``, ``-`` ignored), Asterisk's sort order (literal before pattern, most
  specific first), the legacy matcher.
* :mod:`~simpbx.dialplan.args` (``main/app.c``): ``AST_STANDARD_APP_ARGS`` / ``RAW`` /
  ``NONSTANDARD`` argument splitting, and ``pbx_checkcondition``.
* :mod:`~simpbx.dialplan.expression` with its lexer, values, long doubles and POSIX regular
  expressions (``main/ast_expr2.fl``/``ast_expr2.y``): the ``$[...]`` evaluator, operator
  precedence, long double arithmetic printed with ``%.18Lg``, string/number comparison
  rules (quoted operands are strings and keep their quotes), syntax errors giving ``0``.
* :mod:`~simpbx.dialplan.waitforcondition` (``apps/app_waitforcond.c``).
* :mod:`~simpbx.dialplan.interpreter` (``main/pbx.c``, ``main/pbx_variables.c``): the PBX
  loop, ``${VAR}``, ``${VAR:off:len}``, ``${FUNC(args)}``, ``$[expr]``, inside-out
  substitution, builtin variables, variable lookup order, ``Set`` semantics; the apps
  NoOp, Verbose, Log, Set, UserEvent, WaitForCondition, Goto, GotoIf, GosubIf, ExecIf,
  Gosub, Return, Dial, Wait, Answer, Ringing, Progress, Hangup (any other app is handed to
  the :class:`ChannelHost`, which refuses what it does not know); the functions CUT,
  FILTER, IF, LEN, RAND, CALLERID, CHANNEL (name, uniqueid, hangup handlers), LOCAL,
  GLOBAL, ISNULL, EXISTS (the pure ones in :mod:`~simpbx.dialplan.functions`); the end of
  a call: the ``h`` extension of the context the channel is in, then the hangup handlers
  (``main/pbx_hangup_handler.c``, ``apps/app_stack.c`` ``gosub_run``).
"""

from simpbx.dialplan.args import check_condition, separate_args
from simpbx.dialplan.contexts import Priority
from simpbx.dialplan.errors import DialplanError, Hangup
from simpbx.dialplan.expression import evaluate_expression
from simpbx.dialplan.host import ChannelHost
from simpbx.dialplan.interpreter import Interpreter
from simpbx.dialplan.patterns import extension_matches
from simpbx.dialplan.plan import Dialplan
from simpbx.dialplan.waitforcondition import WaitForConditionSpec, parse_wait_for_condition

__all__ = [
    "ChannelHost",
    "Dialplan",
    "DialplanError",
    "Hangup",
    "Interpreter",
    "Priority",
    "WaitForConditionSpec",
    "check_condition",
    "evaluate_expression",
    "extension_matches",
    "parse_wait_for_condition",
    "separate_args",
]
