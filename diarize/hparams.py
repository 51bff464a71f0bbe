"""Front-end constants, with their units, shared by training and inference."""

SAMPLE_RATE = 16000  # Hz; every input is resampled to this, mono
N_FFT = 400  # samples: 25 ms analysis window
HOP_LENGTH = 160  # samples: 10 ms between frames
N_MELS = 128  # mel bands
FMIN, FMAX = 20.0, 7600.0  # Hz: band edges of the mel filterbank
LOG_FLOOR = 1e-6  # added to mel power before the log

WINDOW_FRAMES = 40  # frames in one encoder input: 400 ms
FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE  # 0.01 s
WINDOW_SECONDS = WINDOW_FRAMES * FRAME_SECONDS  # 0.4 s
