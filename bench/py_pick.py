"""The Python floor of the overhead bench (``bench/dispatcher.cfg`` with ``DS_PY_SCRIPT``):
a native relay that enters Python once per call, for the pick of its initial request
(dispatcher alg 4 called through KSR, so the pick itself costs what the native one does),
and with ``DS_PY_FINAL`` once more for the final reply. What it costs over ``ds4`` is the
least any design pays that decides in Python per call; ``kemi4`` (every message in Python)
and Counterpoise are measured beside it."""

import KSR

ALG = 4
MAX_ATTEMPTS = 3
"""As ``DS_ALG`` and ``DS_MAX_ATTEMPTS`` of dispatcher.cfg."""


class Pick:
    def child_init(self, rank: int) -> int:
        return 0

    def pick(self, msg: object) -> int:
        return 1 if KSR.dispatcher.ds_select_dst_limit(1, ALG, MAX_ATTEMPTS) > 0 else -1

    def final(self, msg: object) -> int:
        return 1


def mod_init() -> Pick:
    return Pick()
