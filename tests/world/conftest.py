import torch

# The CPU is shared: one thread avoids oversubscription stalls.
torch.set_num_threads(1)
