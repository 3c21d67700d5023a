"""A test oracle tokenizer: one token per character (code point + 1); 0 is padding."""


class CharTokenizer:
    vocab_size = 0x110001
    pad_token_id = 0

    def __init__(self, prefix: tuple[int, ...] = ()):
        self.prompt_prefix_ids = prefix

    def encode(self, text):
        return [ord(c) + 1 for c in text]

    def decode(self, ids):
        return "".join(chr(i - 1) for i in ids)
