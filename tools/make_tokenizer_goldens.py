#!/usr/bin/env python3
"""Writes the SDTokenizer test fixtures from the reference tokenizer.

    /work/venv/bin/python tools/make_tokenizer_goldens.py [--out Tests/Fixtures/tokenizer]

goldens.json: hard prompts with the ids that transformers' CLIPTokenizer gives them, loaded
the way StableDiffusionPipeline loads it (`CLIPTokenizer.from_pretrained(<tokenizer folder>)`)
and called the way the pipeline calls it (padding="max_length", max_length=77,
truncation=True), plus the untruncated ids without BOS/EOS (add_special_tokens=False).
The tokenizer folders are made here from the bundled CLIP merges (tools/make_clip_bpe.py)
with the special-token settings of the folders diffusers models ship: SD 1.x (pad
"<|endoftext|>", BOS/EOS/UNK as normalized AddedTokens) and SD 2.x (pad "!").

unicode.json: how the reference sees every Unicode scalar: the scalars its pre-tokenisation
regex takes for \\s, \\p{L} and \\p{N} (as ranges), every scalar its Lowercase normaliser
changes, and NFC cases. These come from `tokenizers` directly, not from Python's unicodedata,
which is an older Unicode version.
"""
import argparse, json, os, sys, tempfile, unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_clip_bpe  # noqa: E402

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Regex, normalizers  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

MAX_LENGTH = 77


def added_token(content):
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_tokenizer_folder(path, merges, pad_token):
    """A tokenizer folder as SD 1.x (pad <|endoftext|>) and SD 2.x (pad !) models ship it."""
    os.makedirs(path, exist_ok=True)
    vocab = make_clip_bpe.vocabulary(merges)
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({tok: i for i, tok in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": added_token("<|startoftext|>"), "eos_token": added_token("<|endoftext|>"),
               "pad_token": pad_token, "unk_token": added_token("<|endoftext|>")}
    with open(os.path.join(path, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    config = {"add_prefix_space": False, "do_lower_case": True, "errors": "replace",
              "model_max_length": MAX_LENGTH, "tokenizer_class": "CLIPTokenizer"}
    for key, value in special.items():
        config[key] = dict(value, __type="AddedToken") if isinstance(value, dict) else value
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)


LONG_PROMPT = ("a highly detailed matte painting of a castle on a hill at sunset, volumetric light, "
               "god rays, by greg rutkowski and alphonse mucha, trending on artstation, 8k, octane render, "
               "unreal engine, sharp focus, intricate, elegant, digital painting, concept art, smooth, "
               "illustration, cinematic lighting, hyperrealistic, ultra wide angle, masterpiece, best quality")

PROMPTS = [
    # everyday prompts
    "a photograph of an astronaut riding a horse",
    "A Photograph Of An Astronaut Riding A Horse",
    "A CAT WEARING A HAT",
    "portrait of a woman, oil on canvas, by John Singer Sargent",
    "(masterpiece:1.2), best quality, [ugly:0.5], {{highres}}",
    "((masterpiece)), (((best quality))), [[blurry]]",
    "cyberpunk city at night; neon lights -- rain / reflections",
    "a cat | a dog | a bird",
    "landscape_painting, blue-sky, snow_capped mountains",
    # empty and whitespace
    "",
    " ",
    "     ",
    "\t\n\r",
    "  leading and trailing spaces   ",
    "runs   of \t\t tabs\nand\n\nnewlines\r\nhere",
    "no\u00a0break\u2003em\u3000ideographic\u2028line\u0085next",
    "vertical\u000btab\u000cform feed",
    # punctuation, digits, numbers
    "hello, world! how are you? fine... really!!!",
    "1234567",
    "3.14159 and 2,718 and -42 and 1e10",
    "1920x1080 8k 4K 35mm f/1.8 ISO-100",
    "$100 50% #hashtag @user a&b a+b=c 100°C ~tilde `tick` ^caret",
    "\"quoted\" 'single' «guillemets» „low“ “curly” ‘curly’",
    "...---...!!!???;;;:::",
    "_____----____",
    "a,b.c;d:e!f?g",
    # contractions
    "don't",
    "It's a dog's life, isn't it? I'm sure we'll see, you've said they'd go, we're here",
    "DON'T STOP, IT'S FINE",
    "rock'n'roll o'clock 'sup 'tis",
    "it’s curly don’t",
    "''s '''t",
    # accents and combining characters
    "café naïve Ångström résumé façade jalapeño",
    "CAFÉ NAÏVE ÅNGSTRÖM",
    "cafe\u0301 e\u0301 A\u030a n\u0303",
    "e\u0327\u0301 a\u0323\u0302 z\u0335",
    "Straße STRASSE ß ẞ",
    "İstanbul ıi ǅ ǈ Σίσυφος ΟΔΟΣ",
    "ﬁne ﬂower ligatures",
    # emoji
    "😀 😃 😄 a cat 🐱 on a mat",
    "👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈",
    "👍🏻 👍🏿 👋🏽",
    "🇯🇵 🇺🇸 flags",
    "❤️ ❤ ✨✨✨ ☀︎",
    "emoji😀inside😀words",
    # scripts
    "日本語のテキスト 東京タワー",
    "中文提示词：一只猫坐在垫子上。",
    "한국어 텍스트 고양이",
    "مرحبا بالعالم قطة",
    "Привет, мир! КОШКА на крыше",
    "Ελληνικά γράμματα",
    "हिन्दी पाठ बिल्ली",
    "ภาษาไทย แมว",
    "שלום עולם",
    "mixed English и русский and 日本語",
    "ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ　１２３！",
    "①②③ ½ ¾ Ⅻ ² ³ ٣ ४",
    # HTML entities and markup (the reference does not unescape them)
    "tom &amp; jerry &lt;3 &#39;quoted&#39; &quot;double&quot; &nbsp; &copy;",
    "<b>bold</b> <i>italic</i>",
    # URLs, paths, code
    "https://example.com/path?query=1&x=y#frag",
    "www.example.org user@example.com C:\\Users\\me\\file.png",
    "/usr/local/bin/python3 --version",
    # special token strings inside text
    "<|endoftext|>",
    "a cat <|endoftext|> a dog",
    "x<|endoftext|>y<|startoftext|>z",
    "<|startoftext|>",
    "<|ENDOFTEXT|> <|StartOfText|> <|EndOfText|>!!",
    "<|endoftext|>!!",
    "<|endoftext|<|endoftext|>>",
    "<|endoftext",
    # long words, truncation
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "a" * 200,
    "ab" * 120,
    "🙂" * 30,
    LONG_PROMPT,
    " ".join(["cat"] * 80),
    " ".join(["cat"] * 75),
    " ".join(["cat"] * 76),
    ", ".join(str(i) for i in range(60)),
    # control and odd characters
    "null\x00byte bell\x07 escape\x1b[0m del\x7f",
    "unit\x1fseparator\x1crecord",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom",
    "soft\u00adhyphen",
    "private \ue000\uf8ff use",
    "math 𝐀𝐁𝐂 𝔸𝔹 ∑∫√∞ ≠ ≤",
    "musical 𝄞 and old 𐌰𐌱",
    "tilde~~~ and pipes |||",
]

# SD 2.x pads with "!" (id 0) and, as a side effect, takes "!" in the prompt as that token.
PAD_ZERO_PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "",
    "hello! wow!! amazing!!!",
    "<|ENDOFTEXT|> <|StartOfText|> x<|endoftext|>y",
    "！ full-width exclamation",
    LONG_PROMPT,
]


def unicode_reference():
    scalars = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    everything = "".join(map(chr, scalars))

    def members(pattern):
        rest = normalizers.Replace(Regex(pattern), "").normalize_str(everything)
        return sorted(set(scalars) - set(map(ord, rest)))

    def ranges(values):
        out = []
        for v in values:
            if out and out[-1][1] + 1 == v:
                out[-1][1] = v
            else:
                out.append([v, v])
        return out

    # Lowercase each scalar separately: join with NUL (which maps to itself) and split.
    others = scalars[1:]
    lowered = normalizers.Lowercase().normalize_str("\x00".join(map(chr, others))).split("\x00")
    assert len(lowered) == len(others)
    lower = [[c, [ord(x) for x in low]] for c, low in zip(others, lowered) if low != chr(c)]

    nfc = normalizers.NFC()
    cases = set()
    for c in scalars:
        if c < 0x3000 or 0xAC00 <= c < 0xAC40 or 0xF900 <= c < 0xFB50 or 0x1D15E <= c < 0x1D1C0:
            for s in (chr(c), unicodedata.normalize("NFD", chr(c))):
                if nfc.normalize_str(s) != s:
                    cases.add(s)
    cases.update(["e\u0327\u0301", "e\u0301\u0327", "a\u0323\u0302\u0301", "\u1100\u1161\u11a8",
                  "\u1100\u1161", "\u0041\u030a\u0301", "\u1e9b\u0323", "\u0f73\u0f72"])
    nfc_cases = [[[ord(x) for x in s], [ord(x) for x in nfc.normalize_str(s)]] for s in sorted(cases)]
    return {
        "whitespace": ranges(members(r"\s")),
        "letter": ranges(members(r"\p{L}")),
        "number": ranges(members(r"\p{N}")),
        "lowercase": lower,
        "nfc": nfc_cases,
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "Tests", "Fixtures", "tokenizer"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    merges = make_clip_bpe.load_merges()
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, pad_token, prompts in (("sd1", "<|endoftext|>", PROMPTS), ("sd2", "!", PAD_ZERO_PROMPTS)):
            folder = os.path.join(tmp, name)
            write_tokenizer_folder(folder, merges, pad_token)
            tok = CLIPTokenizer.from_pretrained(folder)
            assert tok.model_max_length == MAX_LENGTH and len(tok) == 49408
            for prompt in prompts:
                ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
                encoded = tok(prompt, add_special_tokens=False).input_ids
                assert len(ids) == MAX_LENGTH
                cases.append({"prompt": prompt, "padTokenID": tok.pad_token_id, "ids": ids, "encoded": encoded})

    reference = ("transformers %s CLIPTokenizer (tokenizers %s), from_pretrained on a tokenizer folder; "
                 "ids = tokenizer(prompt, padding='max_length', max_length=77, truncation=True).input_ids, "
                 "encoded = tokenizer(prompt, add_special_tokens=False).input_ids"
                 % (transformers.__version__, tokenizers.__version__))
    with open(os.path.join(args.out, "goldens.json"), "w", encoding="utf-8") as f:
        # One case per line, so that a diff shows which prompts changed.
        f.write('{"reference": %s,\n"cases": [\n' % json.dumps(reference))
        f.write(",\n".join(json.dumps(case, ensure_ascii=False) for case in cases))
        f.write("\n]}\n")
    with open(os.path.join(args.out, "unicode.json"), "w") as f:
        json.dump(dict(reference="tokenizers %s: \\s \\p{L} \\p{N} of its regex engine, its Lowercase and NFC"
                       % tokenizers.__version__, **unicode_reference()), f, separators=(",", ":"))
        f.write("\n")
    print("wrote %d golden prompts to %s" % (len(cases), args.out))


if __name__ == "__main__":
    main()
