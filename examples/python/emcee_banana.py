"""emcee samples gradserve's banana posterior (models/banana.json) through UM-Bridge.

    GRADSERVE_URL=http://127.0.0.1:8000 python examples/python/emcee_banana.py

UM-Bridge's emcee adapter takes a URL only; with API keys, put the key in it as the
password of HTTP Basic auth (http://:KEY@host:8000). Prints the posterior mean, the
standard deviation and the mean acceptance fraction.
"""

import os
from urllib.parse import urlsplit, urlunsplit

import emcee
import numpy as np
from umbridge.emcee import UmbridgeLogProb

url = os.environ.get("GRADSERVE_URL", "http://127.0.0.1:8000")
key = os.environ.get("GRADSERVE_API_KEY")
if key:
    parts = urlsplit(url)
    url = urlunsplit(parts._replace(netloc=f":{key}@{parts.netloc}"))

log_prob = UmbridgeLogProb(url + "/umbridge", "banana")
walkers, steps = 8, 100
rng = np.random.default_rng(0)
start = np.array([1.0, 1.0]) + 0.1 * rng.normal(size=(walkers, log_prob.ndim))
sampler = emcee.EnsembleSampler(walkers, log_prob.ndim, log_prob)
sampler.run_mcmc(start, steps)
samples = sampler.get_chain(discard=30, flat=True)

print("mean =", samples.mean(axis=0).round(3).tolist())
print("std =", samples.std(axis=0).round(3).tolist())
print("acceptance =", round(float(np.mean(sampler.acceptance_fraction)), 3))
