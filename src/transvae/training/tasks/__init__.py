"""The kinds of training the engine runs: ``autoencoder.AutoencoderTask`` (``transvae train``) and
``generator.GenerationTask`` (``transvae gen-train``). Each implements ``training.task.Task``."""
