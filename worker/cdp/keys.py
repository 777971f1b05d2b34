"""Key names as people and the hosted API write them ("Enter", "ctrl", "a",
"ArrowDown", "F5"), and what `Input.dispatchKeyEvent` needs for each: the
DOM `key` and `code`, the Windows virtual key code Chromium's editing
commands look at, and the text the key types, if any."""

from __future__ import annotations

import dataclasses

# Input.dispatchKeyEvent's modifier bits.
ALT, CTRL, META, SHIFT = 1, 2, 4, 8


@dataclasses.dataclass(frozen=True)
class Key:
    key: str
    code: str
    key_code: int
    text: str = ""
    modifier: int = 0  # its bit, for Alt, Control, Meta and Shift


_NAMED = {
    "Enter": Key("Enter", "Enter", 13, "\r"),
    "Tab": Key("Tab", "Tab", 9, "\t"),
    "Escape": Key("Escape", "Escape", 27),
    "Backspace": Key("Backspace", "Backspace", 8),
    "Delete": Key("Delete", "Delete", 46),
    "Insert": Key("Insert", "Insert", 45),
    "Space": Key(" ", "Space", 32, " "),
    "ArrowUp": Key("ArrowUp", "ArrowUp", 38),
    "ArrowDown": Key("ArrowDown", "ArrowDown", 40),
    "ArrowLeft": Key("ArrowLeft", "ArrowLeft", 37),
    "ArrowRight": Key("ArrowRight", "ArrowRight", 39),
    "Home": Key("Home", "Home", 36),
    "End": Key("End", "End", 35),
    "PageUp": Key("PageUp", "PageUp", 33),
    "PageDown": Key("PageDown", "PageDown", 34),
    "Alt": Key("Alt", "AltLeft", 18, modifier=ALT),
    "Control": Key("Control", "ControlLeft", 17, modifier=CTRL),
    "Meta": Key("Meta", "MetaLeft", 91, modifier=META),
    "Shift": Key("Shift", "ShiftLeft", 16, modifier=SHIFT),
    **{f"F{n}": Key(f"F{n}", f"F{n}", 111 + n) for n in range(1, 13)},
}
_ALIASES = {
    "return": "Enter",
    "esc": "Escape",
    "del": "Delete",
    "up": "ArrowUp",
    "down": "ArrowDown",
    "left": "ArrowLeft",
    "right": "ArrowRight",
    "pgup": "PageUp",
    "pgdn": "PageDown",
    "ctrl": "Control",
    "cmd": "Meta",
    "command": "Meta",
    "super": "Meta",
    "win": "Meta",
    "option": "Alt",
}
_BY_LOWER = {name.lower(): key for name, key in _NAMED.items()}
_BY_LOWER.update({alias: _NAMED[name] for alias, name in _ALIASES.items()})
_SHIFTED_DIGITS = {")": "0", "!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6"}


def lookup(name: str) -> Key | None:
    """The key called `name`, or None. Names are matched without case;
    one character is that character's key."""
    if len(name) == 1:
        return for_char(name)
    return _BY_LOWER.get(name.lower())


def for_char(char: str) -> Key:
    """The key that types `char` (newline: Enter)."""
    if char in "\r\n":
        return _NAMED["Enter"]
    if char == " ":
        return _NAMED["Space"]
    if char == "\t":
        return _NAMED["Tab"]
    if char.isascii() and char.isalpha():
        return Key(char, f"Key{char.upper()}", ord(char.upper()), char)
    if char.isascii() and char.isdigit():
        return Key(char, f"Digit{char}", ord(char), char)
    if char in _SHIFTED_DIGITS:
        digit = _SHIFTED_DIGITS[char]
        return Key(char, f"Digit{digit}", ord(digit), char)
    return Key(char, "", 0, char)  # any other character: typed as text
