"""The text of an HTML-only message: laid out as a mail client shows it, in bounded room.

inscriptis (Apache-2.0) lays HTML out as text: blocks on their own lines,
lists and ``div`` indented, table cells in columns. A layout can be far larger
than its HTML, and the sender writes the HTML: a ``style="padding-left:100000em"``
is 100,000 spaces on every line of its element (a 5 kB message made a 20 MB
payload), and a table pads every row of a column to its widest cell (one cell of
5,000 characters above 5,000 short rows: 25 MB from 115 kB, then the worker's
memory limit). Each byte of that would go to the bus, the activity store and
the POST, for every stream.

So spacing a ``style`` attribute asks for is cut to what a real message uses,
and a layout still larger than :data:`GROWTH` times its HTML (or one that does not
fit in memory) is given up for the same text without layout: no table columns
and no indentation, linear in the HTML, with a line in the message's defects.
"""

from __future__ import annotations

from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.html_properties import Display
from inscriptis.model.attribute import DEFAULT_ATTRIBUTE_MAP
from inscriptis.model.config import ParserConfig
from inscriptis.model.css import CssParse
from inscriptis.model.html_element import HtmlElement
from inscriptis.model.tag import CustomHtmlTagHandlerMapping

#: A layout may be this many times its HTML's length (plus SLACK) before it is given up.
GROWTH = 4
SLACK = 64 * 1024
#: Lines or characters of spacing a ``style`` attribute may ask for (inscriptis counts in em).
MOST_SPACING = 4

TOO_LARGE = "body: the HTML's layout as text is too large; its text is given without layout"


def _config(
    profile: dict[str, HtmlElement], most_padding: int, tags: CustomHtmlTagHandlerMapping | None = None
) -> ParserConfig:
    def spacing_cut(value: str, element: HtmlElement) -> None:
        """inscriptis's reading of a ``style`` attribute, with its margins and padding cut."""
        CssParse.attr_style(value, element)
        element.margin_before = min(element.margin_before, MOST_SPACING)
        element.margin_after = min(element.margin_after, MOST_SPACING)
        element.padding_inline = min(element.padding_inline, most_padding)

    config = ParserConfig(css=profile, custom_html_tag_handler_mapping=tags)
    # A mapping of its own: the Attribute instance holds inscriptis's module-wide one.
    config.attribute_handler.attribute_mapping = {**DEFAULT_ATTRIBUTE_MAP, "style": spacing_cut}
    return config


def _flat_profile() -> dict[str, HtmlElement]:
    """inscriptis's own profile, without indentation, rows as lines and cells as words."""
    profile = {tag: element.__copy__() for tag, element in CSS_PROFILES["relaxed"].items()}
    for element in profile.values():
        element.padding_inline = 0
    profile["tr"] = HtmlElement(display=Display.block)
    profile["td"] = profile["th"] = HtmlElement(display=Display.inline, suffix=" ", limit_whitespace_affixes=True)
    return profile


_TABLE_TAGS = ("table", "tr", "td", "th")
_LAID_OUT = _config(CSS_PROFILES["relaxed"], MOST_SPACING)
# None for a tag's handler: inscriptis passes the tag by, and the profile alone says how it shows.
# No padding at all: nested elements add theirs up, line after line.
_FLAT = _config(
    _flat_profile(),
    0,
    CustomHtmlTagHandlerMapping(dict.fromkeys(_TABLE_TAGS, None), dict.fromkeys(_TABLE_TAGS, None)),
)


def text_of_html(html: str, defects: list[str]) -> str:
    """*html*'s text, laid out if that fits in GROWTH times its length; else flat, noted in *defects*."""
    try:
        text = str(get_text(html, _LAID_OUT))
    except MemoryError:
        text = None
    if text is None or len(text) > GROWTH * len(html) + SLACK:
        del text  # before the flat one is made: it may be most of the memory there is
        defects.append(TOO_LARGE)
        text = str(get_text(html, _FLAT))
    return text.strip("\n")
