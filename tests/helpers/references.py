"""What keeps an object alive that should be gone: for failure messages of
tests that free things by reference counting alone."""

from __future__ import annotations

import gc
import inspect


def holders(obj: object, depth: int = 6) -> list[str]:
    """What refers to an object that should be gone, and what refers to
    those, `depth` levels up (for the failure message): a method, a
    function, a frame, a traceback or a coroutine is named by its code."""
    seen = {id(obj)}
    lines: list[str] = []

    def walk(target: object, level: int) -> None:
        referrers = gc.get_referrers(target)
        seen.add(id(referrers))
        for ref in referrers:
            if id(ref) in seen or getattr(ref, "f_code", None) in own_code:
                continue
            seen.add(id(ref))
            name = type(ref).__qualname__
            if inspect.ismethod(ref):
                name = f"method {ref.__func__.__qualname__}"
            elif inspect.isfunction(ref):
                name = f"function {ref.__qualname__}"
            elif inspect.isframe(ref):
                name = f"frame of {ref.f_code.co_qualname}"
            elif inspect.istraceback(ref):
                name = f"traceback at {ref.tb_frame.f_code.co_qualname}"
            elif inspect.iscoroutine(ref):
                name = f"coroutine {ref.__qualname__}"
            lines.append("  " * level + name)
            if level + 1 < depth and len(lines) < 120:
                walk(ref, level + 1)

    own_code = (walk.__code__, holders.__code__)
    walk(obj, 0)
    return lines
