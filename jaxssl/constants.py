"""Numbers every layer of jaxssl agrees on (each defined here once)."""

SAMPLE_RATE = 16_000  # Hz: every corpus is read (and resampled) at this rate.
FRAME_HOP = 320       # Samples per encoder frame: the CNN's total stride, 50 frames per second.
MEL_HOP = 160         # Samples per log-mel / MFCC frame: 10 ms.
LOG_FLOOR = 1e-6      # log(power + LOG_FLOOR) in every log-mel feature, offline or in the model.
COSINE_EPS = 1e-8     # torch.nn.functional.cosine_similarity clamps each norm at this.
