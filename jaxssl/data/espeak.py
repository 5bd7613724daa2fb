"""A small ctypes binding to eSpeak NG, for offline speech with phone alignments.

The library and its voice data come from the `espeakng-loader` wheel
(`espeakng_loader.get_library_path()` / `get_data_path()`), so no system package
is needed. The engine runs in AUDIO_OUTPUT_SYNCHRONOUS mode: `espeak_Synth`
returns once the whole text is rendered, and our synth callback collects the
int16 audio plus the event list of each block. With
espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_PHONEME_IPA every phone is
reported as an event carrying its IPA name and its start `sample`, which gives
phone-level alignments for free. C API: espeak-ng `speak_lib.h`
(https://github.com/espeak-ng/espeak-ng/blob/master/src/include/espeak-ng/speak_lib.h).

libespeak-ng keeps all its state in globals, so it is a per-process singleton:
a module lock lets one call at a time have it loaded and initialised. Each call
loads, initialises and unloads it again, because some of that global state is
never reset and would make the audio depend on earlier calls (see `_Session`).
Use processes, not threads, for parallelism.
"""
import _ctypes
import ctypes
import functools
import os
import threading
import warnings
from typing import NamedTuple

import espeakng_loader
import numpy as np

# speak_lib.h constants (API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000  # Return an error instead of calling exit() on missing data.
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0
_PARAM_RATE, _PARAM_PITCH = 1, 3
_LIST_TERMINATED_EVENT = 0
_END_EVENT, _MSG_TERMINATED_EVENT = 5, 6
_PHONEME_EVENT = 7
# Events whose `sample` marks where the previous phone stops: the next phone, a
# pause (a PHONEME event with an empty name) or the end of a clause. WORD events
# are not boundaries: when words are linked (English linking r, Italian vowel
# sandhi) the WORD event falls inside the still-sounding last phone.
_BOUNDARY_EVENTS = frozenset((_END_EVENT, _MSG_TERMINATED_EVENT, _PHONEME_EVENT))

# An unnamed PHONEME segment quieter than this fraction of the utterance RMS is a
# pause; a louder one is a sound without an IPA symbol (see `_phone_segments`).
_PAUSE_RMS_RATIO = 0.3
RATE_RANGE = (80, 450)  # espeakRATE_MINIMUM / MAXIMUM, words per minute.
PITCH_RANGE = (0, 100)


class _EventId(ctypes.Union):
  _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
              ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
  """espeak_EVENT; `sample` is the sample index from the start of the message."""
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int), ("length", ctypes.c_int),
              ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", _EventId)]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakError(RuntimeError):
  """Raised when libespeak-ng cannot be loaded or rejects a request."""


class Synthesis(NamedTuple):
  """Output of `synthesize`; unpacks as `samples, sample_rate, phones`."""
  samples: np.ndarray  # [N] int16 at `sample_rate`.
  sample_rate: int
  phones: list  # [(ipa, start_sample, end_sample)], ordered, disjoint, 0 <= start < end <= N.


@functools.cache
def _paths():
  """(libespeak-ng.so, espeak-ng-data) shipped by the espeakng-loader wheel."""
  return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def _load_library(path):
  """dlopen()s libespeak-ng and declares the signatures we call."""
  try:
    lib = ctypes.CDLL(path)
  except OSError as e:
    raise EspeakError(f"Cannot load libespeak-ng from espeakng-loader ({path}): {e}") from e
  lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
  lib.espeak_Initialize.restype = ctypes.c_int
  lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
  lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
  lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
  lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                               ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
  lib.espeak_Info.argtypes = [ctypes.c_void_p]
  lib.espeak_Info.restype = ctypes.c_char_p
  lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
  return lib


class _Session:
  """One load -> initialise -> synthesize -> terminate -> unload cycle.

  Why not initialise once per process: libespeak-ng carries hidden state from one
  utterance to the next (function-static pitch-flutter index, AGC gain, waveform
  phase in wavegen.c), and none of it is reset by espeak_Initialize. The same
  text then comes out with different samples *and* lengths depending on what
  was spoken before, which breaks reproducible corpora. Unloading the library
  (dlclose) and loading it again restores every static to its initial value;
  that costs ~2 ms, about the time to synthesize one second of speech.
  """

  def __init__(self):
    self._path, data_path = _paths()
    self.lib = _load_library(self._path)
    # `path` is the directory that *contains* espeak-ng-data.
    rate = self.lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, os.path.dirname(data_path).encode(),
        _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT)
    if rate <= 0:
      self.close()
      raise EspeakError(f"espeak_Initialize failed (returned {rate}) with data at {data_path}")
    self.sample_rate = rate
    self.version = self.lib.espeak_Info(None).decode()
    self._chunks, self._events = [], []
    # Keep a reference: ctypes frees the trampoline when the Python object dies.
    self._callback = _SynthCallback(self._on_block)
    self.lib.espeak_SetSynthCallback(self._callback)

  def _on_block(self, wav, num_samples, events):
    if num_samples > 0:
      self._chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    i = 0
    while events[i].type != _LIST_TERMINATED_EVENT:
      e = events[i]
      if e.type in _BOUNDARY_EVENTS:
        # The name is NUL-terminated unless it fills all 8 bytes; a name cut
        # inside a UTF-8 sequence loses only that partial character.
        name = e.id.string.decode("utf-8", "ignore") if e.type == _PHONEME_EVENT else None
        self._events.append((e.type, e.sample, name))
      i += 1
    return 0  # 0 = continue synthesis.

  def synthesize(self, text, voice_name, rate, pitch, seed):
    if self.lib.espeak_SetVoiceByName(voice_name.encode()) != _EE_OK:
      raise EspeakError(f"eSpeak NG has no voice {voice_name!r} (data: {_paths()[1]})")
    for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch)):
      if self.lib.espeak_SetParameter(param, value, 0) != _EE_OK:
        raise EspeakError(f"espeak_SetParameter({param}, {value}) failed")
    # Breath noise draws from espeak's generator and from libc rand(): seed both.
    self.lib.espeak_ng_SetRandSeed(seed)
    _LIBC.srand(seed & 0xFFFFFFFF)
    buf = text.encode("utf-8")
    err = self.lib.espeak_Synth(buf, len(buf) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if err != _EE_OK:
      raise EspeakError(f"espeak_Synth failed with error {err} for text {text!r}")
    samples = (np.concatenate(self._chunks) if self._chunks
               else np.zeros((0,), np.int16)).astype(np.int16, copy=False)
    return samples, self._events

  def close(self):
    global _WARNED_STILL_LOADED
    self.lib.espeak_Terminate()
    handle = self.lib._handle  # pylint: disable=protected-access
    del self.lib
    _ctypes.dlclose(handle)
    # Someone else (another binding) holding the library keeps it mapped, and
    # then its statics survive: warn once rather than silently lose determinism.
    try:
      still = ctypes.CDLL(self._path, mode=os.RTLD_NOLOAD)
    except OSError:
      return
    _ctypes.dlclose(still._handle)  # pylint: disable=protected-access
    if not _WARNED_STILL_LOADED:
      _WARNED_STILL_LOADED = True
      warnings.warn("libespeak-ng stays loaded by another user in this process; synthesis "
                    "may depend on previous utterances.", RuntimeWarning, stacklevel=3)


_LIBC = ctypes.CDLL(None)
_LIBC.srand.argtypes = [ctypes.c_uint]
# The library is process-global; only one session may have it loaded at a time.
_LOCK = threading.Lock()
_WARNED_STILL_LOADED = False


@functools.cache
def _engine_info():
  """(sample_rate, version) of the bundled engine, probed once."""
  with _LOCK:
    session = _Session()
    try:
      return session.sample_rate, session.version
    finally:
      session.close()


def _phone_segments(events, samples):
  """Turns boundary events into [(ipa, start, end)] phones inside [0, len(samples)].

  Each PHONEME event owns the samples up to the next boundary event, so segments
  tile the audio in event order; events at the same sample (espeak's zero-length
  markers) own nothing and are dropped. Some PHONEME events have no IPA name.
  Those are either pauses (mnemonics "_", "_:", "_!": silence, or a faint echo)
  or sounds without an IPA symbol of their own (the ";" palatal off-glide, the
  Italian epenthetic "@-"). The audio tells them apart: measured over 600
  utterances of the demo corpus, pauses stay below 0.14x the utterance RMS and
  such sounds above 0.44x. A silent one is a gap between phones; a sounding one
  extends the phone before it.
  """
  n = len(samples)
  x = samples.astype(np.float64)
  utterance_rms = np.sqrt(np.mean(x**2)) if n else 0.0
  # Running max: segments stay ordered even if espeak ever reported out of order.
  starts = np.clip(np.maximum.accumulate([s for _, s, _ in events] or [0]), 0, n)
  ends = np.append(starts[1:], n)
  phones = []
  for (kind, _, name), start, end in zip(events, starts.tolist(), ends.tolist()):
    if kind != _PHONEME_EVENT or end <= start:
      continue
    if name:
      phones.append((name, start, end))
    elif (phones and phones[-1][2] == start and
          np.sqrt(np.mean(x[start:end]**2)) >= _PAUSE_RMS_RATIO * utterance_rms):
      phones[-1] = (phones[-1][0], phones[-1][1], end)
  return phones


def sample_rate():
  """The engine's native output rate in Hz (22050 for the bundled voices)."""
  return _engine_info()[0]


def version():
  """The libespeak-ng version string, e.g. '1.52.0'."""
  return _engine_info()[1]


@functools.cache
def _variants():
  vdir = os.path.join(_paths()[1], "voices", "!v")
  return tuple(sorted(f for f in os.listdir(vdir) if os.path.isfile(os.path.join(vdir, f))))


def list_variants():
  """Names of the voice variants usable as `variant` (files in voices/!v)."""
  return list(_variants())


def synthesize(text, *, voice="en", variant="m3", rate=175, pitch=50, seed=0):
  """Speaks `text` with eSpeak NG and returns audio plus phone alignments.

  Args:
    text: UTF-8 text in the voice's language.
    voice: eSpeak NG language/voice name, e.g. "en", "es", "fr", "de".
    variant: a voice variant from `list_variants()` (e.g. "m3", "f2"), or "" for
      the language's default voice.
    rate: speaking rate in words per minute, within RATE_RANGE.
    pitch: base pitch 0-100 (50 is the voice's normal pitch).
    seed: seed of the breath-noise generators (variants with `breath`, e.g. f2).

  The output is a pure function of the arguments: the library is loaded fresh
  for every call (see `_Session`).

  Returns:
    Synthesis(samples, sample_rate, phones): samples is [N] int16 at the engine
    rate; phones is a list of (ipa, start_sample, end_sample) with IPA names as
    espeak reports them (stress marks included), ordered, non-overlapping and
    within [0, N]. Pauses and word gaps are not phones.

  Raises:
    ValueError: on an empty text, an unknown variant or out-of-range rate/pitch.
    EspeakError: when the library cannot be loaded or rejects the voice.
  """
  if not text or not text.strip():
    raise ValueError("synthesize() needs a non-empty text.")
  if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
    raise ValueError(f"rate={rate} words/minute is outside eSpeak's range {RATE_RANGE}.")
  if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
    raise ValueError(f"pitch={pitch} is outside eSpeak's range {PITCH_RANGE}.")
  if variant and variant not in _variants():
    raise ValueError(f"Unknown eSpeak variant {variant!r}; choose from {list_variants()}.")
  voice_name = f"{voice}+{variant}" if variant else voice
  with _LOCK:
    session = _Session()
    try:
      samples, events = session.synthesize(text, voice_name, int(rate), int(pitch), int(seed))
    finally:
      session.close()
  return Synthesis(samples, session.sample_rate, _phone_segments(events, samples))


# Characters that espeak prints as separate "phones" but that only modify the
# previous one (palatalisation in Polish, length).
_MODIFIERS = frozenset("ʲʰːˑ")
# espeak phone names that are not IPA (Italian geminate s).
_NON_IPA = {"ss": "sː"}


def normalize_phones(phones):
  """Cleans espeak's IPA phone names; keeps alignments consistent.

  Stress marks (ˈ ˌ) are dropped: stress is a property of the syllable and would
  double the vowel inventory. espeak's '-' suffix (an unstressed-vowel tag in its
  French tables, not IPA) is dropped, Italian "ss" becomes "sː". A phone made only
  of modifier letters (ʲ, ː) is merged into the previous phone when they touch.

  Args:
    phones: [(ipa, start, end)] as returned by `espeak.synthesize`.

  Returns:
    The cleaned [(ipa, start, end)] list, still ordered and non-overlapping.
  """
  out = []
  for name, start, end in phones:
    name = name.replace("ˈ", "").replace("ˌ", "").replace("-", "")
    name = _NON_IPA.get(name, name)
    if not name:
      continue
    if out and set(name) <= _MODIFIERS and out[-1][2] == start:
      out[-1] = (out[-1][0] + name, out[-1][1], end)
    else:
      out.append((name, start, end))
  return out
