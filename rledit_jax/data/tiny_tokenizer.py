"""A small built-in word-level tokenizer, so the project runs without downloading anything.

GPT-2 style pieces: text is split into words that carry their leading space (" Paris"), digit runs,
punctuation runs and whitespace runs. A piece in the fixed word list below is one token; any other
piece is spelled as its UTF-8 bytes, one token per byte, so every text encodes and `decode`
inverts `encode` exactly.

Ids: 0 = "<|endoftext|>" (pad and eos), 1..256 = bytes 0x00..0xff, then the words in list order.
`TINY_VOCAB_SIZE` is the total; the tiny model config uses it, so the word list only ever changes
together with that config.
"""

import re
from collections.abc import Sequence

_END_OF_TEXT = "<|endoftext|>"
_N_BYTES = 256
_FIRST_BYTE_ID = 1

# Words that open a sentence, so they appear without a leading space.
_OPENING_WORDS = """
The What Which Who Where When In An It This Two Three Water Cats Dogs Bees Birds Fish Ice Fire
Snow Grass Milk Gold Iron Paris London Rome Berlin Madrid Tokyo
""".split()

# Words that follow a space; each is one token " word".
_WORDS = """
the a an of in on at to for from by with and or is are was were be been has have had do does did
not no yes it its this that these those he she they his her their who what which where when how
why city capital official language currency used money head state leads located region country
people speak spoken called named name known born live lives main largest river mountain sea lake
island north south east west upper lower greater new old first second third one two three four
five six seven eight nine ten zero hundred thousand day days week weeks month months year years
time color colour sky sun moon star stars earth water ice fire snow rain grass tree trees leaf
milk honey gold iron silver stone sand salt sugar bread cheese apple apples orange oranges lemon
blue green red yellow white black brown grey hot cold warm cool wet dry big small long short high
low fast slow good bad opposite plus minus equals times number degrees Celsius rises sets falls
freezes boils melts grows flies swims barks purrs make makes made cats dogs bees birds fish cows
horses animals animal legs wings eyes heart king queen president leader minister mayor
Zorvia Kelmaria Aventis Brask Carnelia Dovaria Eskaland Feronia Galdor Halvania Ilmora Jastova
Korrin Lumeria Marvosa Nerith Olvenia Pardova Quessa Rovania Sarketh Tolmara Ulvest Varnia
Wendoria Xandria Yellin Zantor Borvia Cressa North South East West Upper Lower Greater New
Kelmar Avel Doran Estel Farrow Gilden Harth Isker Joven Kastel Lorne Mirel Norrow Ostel Perrin
Port Saint Bay Fort Haven
Zorvish Kelmic Avendi Braskan Carnish Dovric Eskalic Ferran Galdic Halvan
crown mark florin talon shell coin golden copper
Mara Voss Tallis Wren Orrin Vale Edda Korr Senna Brand Ilse Darrow Junior Elder
Aldmere Brightmarch Coldreach Duskfall Emberlands Frostvale Greywater Highmoor
Paris London Rome Berlin Madrid Tokyo France England Italy Germany Spain Japan English French
Italian German Spanish Japanese euro pound yen dollar Europe Asia Africa America
""".split()


_TOKENS: list[bytes] = (
    [_END_OF_TEXT.encode()]
    + [bytes([b]) for b in range(_N_BYTES)]
    + [w.encode() for w in _OPENING_WORDS]
    + [(" " + w).encode() for w in _WORDS]
)
_WORD_IDS: dict[str, int] = {token.decode(): i for i, token in enumerate(_TOKENS) if i >= _FIRST_BYTE_ID + _N_BYTES}
_PIECE = re.compile(r" ?[^\W\d_]+| ?\d+| ?[^\s\w]+| ?_+|\s+(?!\S)|\s+")

TINY_VOCAB_SIZE: int = len(_TOKENS)
TINY_PAD_ID: int = 0


class TinyTokenizer:
    """Implements the project's `Tokenizer` interface over the fixed vocabulary above."""

    vocab_size: int = TINY_VOCAB_SIZE
    pad_token_id: int = TINY_PAD_ID
    prompt_prefix_ids: tuple[int, ...] = ()

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _PIECE.findall(text):
            word_id = _WORD_IDS.get(piece)
            if word_id is None:
                ids.extend(_FIRST_BYTE_ID + b for b in piece.encode())
            else:
                ids.append(word_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        out = bytearray()
        for i in ids:
            if not 0 <= i < TINY_VOCAB_SIZE:
                raise ValueError(f"token id {i} is outside the tiny vocabulary [0, {TINY_VOCAB_SIZE})")
            out += _TOKENS[i]
        return out.decode("utf-8", errors="replace")
