"""Dataset builders for local speech corpora; `REGISTRY` maps `--dataset` / `data.name` to classes.

Each builder lives in its own package (`builders/<name>/<name>.py`) and
derives from `base.SpeechBuilder`, so all datasets share one feature set.
They stay out of TFDS's global registry (see `base`); use `get(name)`. A fork adds one with
`builders.register("name", MyBuilder)`.
"""
from jaxssl import registry
from jaxssl.data.builders.common_voice import common_voice
from jaxssl.data.builders.demo_corpus import demo_corpus
from jaxssl.data.builders.librispeech import librispeech
from jaxssl.data.builders.local_audio import local_audio
from jaxssl.data.builders.multilingual_librispeech import multilingual_librispeech
from jaxssl.data.builders.voxceleb1 import voxceleb1

REGISTRY = registry.Registry("dataset", "dataset", {
    "demo_corpus": demo_corpus.DemoCorpus,
    "local_audio": local_audio.LocalAudio,
    "librispeech": librispeech.Librispeech,
    "multilingual_librispeech": multilingual_librispeech.MultilingualLibrispeech,
    "common_voice": common_voice.CommonVoice,
    "voxceleb1": voxceleb1.Voxceleb1,
})
register, get, names = REGISTRY.register, REGISTRY.get, REGISTRY.names
