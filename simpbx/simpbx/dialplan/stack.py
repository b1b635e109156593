"""The channel's Gosub stack (apps/app_stack.c): return addresses and LOCAL variables."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Frame:
    """A Gosub stack frame (apps/app_stack.c ``gosub_stack_frame``)."""

    context: str
    exten: str
    priority: int  # the return priority (the one after the Gosub)
    arguments: int
    is_special: bool
    locals: dict[str, str] = field(default_factory=dict)


class GosubStack:
    """The frames pushed by Gosub (innermost last), and whether one ever was."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.allocated = False  # the datastore exists once a Gosub ran

    def lookup(self, name: str) -> str | None:
        """A LOCAL variable (ARGn included), innermost frame first; None if none has it."""
        for frame in reversed(self.frames):
            if name in frame.locals:
                return frame.locals[name]
        return None

    def assign(self, name: str, value: str) -> bool:
        """Set the innermost LOCAL variable ``name``; False when no frame has it."""
        for frame in reversed(self.frames):
            if name in frame.locals:
                frame.locals[name] = value
                return True
        return False

    def arguments(self) -> int:
        """How many ARGn the innermost frame declares (0 outside any Gosub)."""
        return self.frames[-1].arguments if self.frames else 0

    def push(self, frame: Frame) -> None:
        self.frames.append(frame)
        self.allocated = True

    def pop(self) -> Frame | None:
        return self.frames.pop() if self.frames else None

    def unwind_special(self) -> None:
        """Pop frames up to and including the special one a hangup handler runs in."""
        while self.frames:
            if self.frames.pop().is_special:
                break
