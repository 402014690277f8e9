"""A word-level tokenizer for the synthetic tasks (`training/tasks.py`), built locally in HF format.

Text is lowercase words, single digits and capital letters, and punctuation, separated by single
spaces. As in SentencePiece, a space becomes `▁` and sticks to the piece after it: " the" is the
token `▁the`, " 4821" is `▁4`, `8`, `2`, `1`, " QX" is `▁Q`, `X`. Every piece the tasks write is
in the vocabulary (~570 tokens), so encode(decode(ids)) == ids for their texts; anything else
becomes <|unk|>. `tokenizer.json` loads with transformers' AutoTokenizer and vLLM; encoding
prepends <|startoftext|>, as LLaDA's tokenizer does.

Ids: the specials first (bos 0, eos 1, mask 2, eot 3, ...), then digits, capitals, punctuation,
words. The model's vocab_size is this length padded up to a multiple of 64.
"""

import json
import string
from pathlib import Path

SPACE = "\u2581"  # ▁
BOS, EOS, MASK, EOT = "<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|eot_id|>"
SPECIALS = [BOS, EOS, MASK, EOT, "<|start_header_id|>", "<|end_header_id|>", "<|unk|>"]
PUNCTUATION = list(".,:;?!=-'\"()")

# Filler prose (never a key, never a task word).
FILLER_NOUNS = """grass sky sun river forest mountain city road garden house window door table book
letter song bird cat dog horse boat train bridge tower market school child farmer teacher friend
stone cloud rain snow wind morning evening night summer winter field lake hill valley village shop
street ship island beach wall roof lamp chair story picture""".split()
ADJECTIVES = """green blue yellow quiet old young small large bright dark warm cold happy calm busy
gentle tall wide narrow golden red brown white long short soft loud early late""".split()
VERBS = """sees finds follows crosses watches leaves reaches passes visits carries holds paints
opens builds helps likes remembers wants needs knows keeps meets""".split()
ADVERBS = "slowly quickly often never always today again together alone soon".split()
FUNCTION_WORDS = """the a an is are was were and but or of to in on at near over under with by from
for this that there here we go back it they he she then when while every some many""".split()
# Retrieval keys (one token each).
KEYS = """apple banana cherry grape lemon mango melon olive peach pear plum orange lime kiwi
papaya guava fig date apricot coconut tiger lion zebra camel panda koala otter beaver badger
falcon eagle raven parrot pigeon swan heron crane penguin dolphin whale shark salmon trout lobster
crab oyster octopus squid turtle lizard cobra python viper frog toad spider beetle hornet wasp
moth butterfly violin cello guitar piano flute trumpet drum harp banjo organ tuba oboe copper
silver iron nickel zinc cobalt carbon neon argon helium radium cotton linen velvet satin denim
wool silk leather marble granite quartz amber pearl ruby emerald sapphire diamond topaz onyx jade
comet planet galaxy nebula meteor asteroid rocket saturn jupiter mars venus mercury pluto neptune
anchor compass lantern ladder hammer chisel wrench shovel kettle teapot basket bucket barrel
candle mirror pillow blanket carpet curtain ribbon button needle thimble wagon tractor scooter
bicycle canoe kayak yacht glacier canyon desert jungle meadow prairie tundra volcano geyser
harbor castle temple palace cottage cabin igloo tent""".split()
# Words of the task templates.
TASK_WORDS = """special magic number question answer what var which variables assigned value secret
code remember string repeat""".split()


def vocabulary() -> list[str]:
    """All tokens in id order."""
    words = FILLER_NOUNS + ADJECTIVES + VERBS + ADVERBS + FUNCTION_WORDS + KEYS + TASK_WORDS
    assert len(set(words)) == len(words), "a word is in two lists"
    chars = list(string.digits) + list(string.ascii_uppercase)
    return [*SPECIALS, SPACE, *(SPACE + c for c in chars), *chars,
            *(SPACE + p for p in PUNCTUATION), *PUNCTUATION, *(SPACE + w for w in words)]


def make_tokenizer():
    """The tokenizer as a `tokenizers.Tokenizer` (in memory)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    punct = "".join("\\" + p for p in PUNCTUATION)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(f"{SPACE}?[A-Z0-9]|{SPACE}?[{punct}]"), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    tok.add_special_tokens(SPECIALS)
    return tok


def save_tokenizer(out_dir) -> dict[str, int]:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json to `out_dir`.
    Returns {"bos", "eos", "mask", "eot", "size"}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS,
        "pad_token": EOS, "mask_token": MASK, "unk_token": "<|unk|>",
        "additional_special_tokens": [EOT, "<|start_header_id|>", "<|end_header_id|>"],
        "model_max_length": 8448, "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "mask_token", "unk_token")},
        indent=1))
    return special_ids(tok)


def special_ids(tok=None) -> dict[str, int]:
    tok = tok or make_tokenizer()
    return {"bos": tok.token_to_id(BOS), "eos": tok.token_to_id(EOS), "mask": tok.token_to_id(MASK),
            "eot": tok.token_to_id(EOT), "size": tok.get_vocab_size()}
