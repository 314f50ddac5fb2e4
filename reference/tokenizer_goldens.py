"""Writes Goldens/tokenizer.json: what openai/CLIP's tokenizer gives for tricky strings, to check
CLIPTokenizer (Sources/CLIP/Tokenizer) against (Tests/CLIPTests/TokenizerTests.swift).

Each entry: text; ids = SimpleTokenizer.encode(text); tokens77 = the clip.tokenize(truncate=True)
row; eot_index = its argmax (where CLIP reads text features); decoded = SimpleTokenizer.decode(ids);
decoded_prefix = decode(ids[:len(ids) // 2]) (may cut a UTF-8 sequence: U+FFFD handling).

Rerun from the repository root:  python3 reference/tokenizer_goldens.py

Not covered on purpose: mojibake repair (ftfy's fix_encoding, e.g. "cafÃ©"), which the Swift
port does not reimplement.
"""
import json
import os

from common import clip_tokenizer, tokenize

DTD = ("banded blotchy braided bubbly bumpy chequered cobwebbed cracked crosshatched crystalline "
       "dotted fibrous flecked freckled frilly gauzy grid grooved honeycombed interlaced knitted "
       "lacelike lined marbled matted meshed paisley perforated pitted pleated polka-dotted porous "
       "potholed scaly smeared spiralled sprinkled stained stratified striped studded swirly veined "
       "waffled woven wrinkled zigzagged").split()
assert len(DTD) == 47

TEXTS = [
    # plain prompts and class names
    "a photo of a cat.", "A photo of a Yorkshire Terrier, a type of pet.", "itap of a car?!",
    "Abyssinian", "2012 Tesla Model S", "Annual Crop Land", "apple_pie", "Boeing 737-800",
    "St. Bernard", "Rolls-Royce Phantom Drophead Coupe Convertible 2012",
    # punctuation, apostrophes
    "Hello,,, world...!!!", "(:-)) <3 --> ==> ...", "@#$%^&*()_+{}|:\"<>?~`", "it's", "It'S",
    "'ll", "we'll they've I'm you're she'd don't", "rock'n'roll", "''s", "the cats' toys",
    "it’s a dog’s life", "cat'ſ \u017ftraße",
    # digits and other numbers
    "123456", "3.14", "1st 2nd 3rd", "½ ² ③ Ⅻ", "٣٤٥ ١٢",
    # accents and combining marks
    "café", "naïve", "Crème brûlée", "cafe\u0301", "Ångström Übergrößenträger", "z\u0335a\u0337lgo\u0338",
    "\u03b5\u0345 \u03c9\u0345",
    # non-Latin scripts, final sigma, special lower-casing
    "Η γρήγορη καφέ αλεπού", "ΟΔΟΣ ΟΔΟΣ. Σ AΣ", "Быстрая коричневая лиса", "一只猫的照片",
    "猫の写真です。カタカナ", "صورة قطة", "बिल्ली की तस्वीर", "고양이 사진", "แมว", "İstanbul ß ẞ ǅ",
    # mixed scripts
    "iPhone 15 Pro Max — 256GB", "東京 Tokyo トウキョウ", "abcабвαβγ",
    # emoji: plain, ZWJ family, flags, skin tone, tag sequence, variation selector, keycap
    "🐱", "👨‍👩‍👧‍👦 family", "🇫🇷🇯🇵 flags", "👍🏽 thumbs up", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "❤️ love", "1️⃣",
    # HTML entities (ftfy decodes repeatedly unless the line has '<'; html.unescape twice after)
    "rock &amp; roll", "it&#39;s", "&lt;3 you", "&amp;amp;amp;amp;lt;b&gt;", "&eacute;t&eacute; &EACUTE;",
    "&nbsp;a&nbsp;b", "&#x1F600; &#128512;", "&#0; &#x110000; &#128 &#xD800;", "fish &chips &notit; &notin;",
    "this&not that", "5 < 6 &amp;amp; 7", "line &amp;amp;amp;\nline <\nline &amp;amp;amp;", "&Kopf; &\u212aopf;",
    # ftfy fixes: ligatures, width, terminal escapes, C1 controls, BOM, control characters
    "ﬁsh ﬂower ﬃ", "ＬＯＵＤ　ＮＯＩＳＥＳ", "ﾊﾝｶｸ ｶﾞｷﾞ", "\x1b[36mblue\x1b[0m", "\x96 dash", "\ufeffBOM \x07bell",
    # whitespace
    "a\tb\nc  d\r\ne", "  leading and trailing  ", "\u00a0nbsp\u2003em\u3000ideographic\u2028sep",
    "\u200bzero\u200bwidth", "", "   ", "UPPER CASE PROMPT",
    # special tokens as literal text
    "hello <|endoftext|> world", "<|startoftext|>a", "!<|endoftext|>", "<|ENDOFTEXT|>",
    # many merges, truncation
    "antidisestablishmentarianism", "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis", "a photo of " * 40,
] + DTD


def main():
    tok = clip_tokenizer()
    rows = tokenize(TEXTS)
    entries = []
    for text, row in zip(TEXTS, rows):
        ids = tok.encode(text)
        entries.append(dict(text=text, ids=ids, tokens77=row.tolist(), eot_index=int(row.argmax()),
                            decoded=tok.decode(ids), decoded_prefix=tok.decode(ids[:len(ids) // 2])))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Goldens", "tokenizer.json")
    with open(out, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n]\n")
    print(f"wrote {len(entries)} entries to {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
