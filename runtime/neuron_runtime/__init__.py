"""neuron_runtime: the container entrypoint that compiles models with NxD Inference and serves them with vLLM.

Runs on Python 3.10 (the Neuron DLC base image) and imports the Neuron stack (torch-neuronx, NxDI, vLLM)
lazily, so the pure parts (compile spec, key, NeuronConfig, arguments, env) are testable anywhere.
"""

__version__ = "0.1.0"
