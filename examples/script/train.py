"""A tiny nanoGPT-style character model, the script that lr-sweeps sweeps as a command trial.

It trains a small GPT on Python's own help text (``pydoc_data.topics``, no download) and
prints ``iter N: loss L, lr R`` every --log-interval steps and ``step N: val loss V`` after
each eval, which is all a sweep reads. Run it alone, or data-parallel under torchrun:

    python examples/script/train.py --lr=3e-3 --lr-schedule=cosine --max-iters=200
    torchrun --nproc_per_node=2 examples/script/train.py --max-iters=200
    python examples/script/train.py --init-from=resume   # continue from {out_dir}/ckpt.pt

lr-sweeps sweeps it with examples/script.yaml: each trial runs it with its sampled --lr and
hands it its sampled schedule through the environment (``schedules.from_env`` below).
"""

from __future__ import annotations

import argparse
import os
from pydoc_data.topics import topics

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import schedules

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
# Every flag, --name=value (or --name value); its type is its default's.
defaults = dict(lr=1e-3, warmup_steps=0, max_iters=200, eval_interval=50, eval_iters=5,
                log_interval=10, batch_size=16, block_size=32, n_layer=2, n_embd=32, n_head=2,
                weight_decay=0.0, seed=0, out_dir="out")  # fmt: skip
for name, value in defaults.items():
    p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
p.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine", "linear"])
p.add_argument("--init-from", default="scratch", choices=["scratch", "resume"])
args = p.parse_args()

# -- distributed setup: one process alone, or one per rank under torchrun -----------------
ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
if ddp:
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
local_rank = int(os.environ.get("LOCAL_RANK", "0"))
device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
if device.type == "cuda":
    torch.cuda.set_device(device)
torch.set_num_threads(1)
master = rank == 0

# -- data: characters of the standard library's help topics, 90/10 train/val --------------
text = "".join(topics.values())
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
n = int(0.9 * len(data))
train_data, val_data = data[:n], data[n:]
gen = torch.Generator().manual_seed(args.seed * 1000 + rank)  # each rank its own batches


def get_batch(split: str, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    d = train_data if split == "train" else val_data
    ix = torch.randint(len(d) - args.block_size - 1, (args.batch_size,), generator=g)
    x = torch.stack([d[i : i + args.block_size] for i in ix])
    y = torch.stack([d[i + 1 : i + 1 + args.block_size] for i in ix])
    return x.to(device), y.to(device)


# -- model: a tiny GPT --------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.qkv, self.proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, a: argparse.Namespace) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, a.n_embd), nn.Embedding(a.block_size, a.n_embd)
        self.blocks = nn.Sequential(*[Block(a.n_embd, a.n_head) for _ in range(a.n_layer)])
        self.ln_f = nn.LayerNorm(a.n_embd)
        self.head = nn.Linear(a.n_embd, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied lm head
        for m in self.modules():  # small init, as in GPT-2
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        logits = self.head(self.ln_f(self.blocks(self.tok(idx) + self.pos(pos))))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


torch.manual_seed(args.seed)  # every rank starts from the same weights
raw_model = GPT(len(chars), args).to(device)
ids = [local_rank] if device.type == "cuda" else None
model = DDP(raw_model, device_ids=ids) if ddp else raw_model
optimizer = torch.optim.AdamW(raw_model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
# THE key line. Under a sweep, the trial's sampled schedule (every lr-sweeps family), exactly;
# alone, --lr-schedule.
scheduler = schedules.from_env(
    optimizer,
    total_steps=args.max_iters,
    default=schedules.for_run(
        args.lr_schedule, lr=args.lr, total_steps=args.max_iters, warmup_steps=args.warmup_steps
    ),
)

ckpt_path = os.path.join(args.out_dir, "ckpt.pt")
start = 1
if args.init_from == "resume" and os.path.exists(ckpt_path):
    ckpt = torch.load(ckpt_path, map_location=device)
    raw_model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    gen.set_state(ckpt["rng"][rank].cpu())
    start = ckpt["iter"] + 1
os.makedirs(args.out_dir, exist_ok=True)


@torch.no_grad()
def estimate_val_loss() -> float:
    model.eval()
    g = torch.Generator().manual_seed(1337)  # the same val batches, every eval, every rank
    losses = [raw_model(*get_batch("val", g)).item() for _ in range(args.eval_iters)]
    model.train()
    return sum(losses) / len(losses)


def save_checkpoint(it: int) -> None:
    rng = [gen.get_state()]
    if ddp:  # each rank's batch generator, so a resumed run draws the batches it would have
        rng = [None] * world
        dist.all_gather_object(rng, gen.get_state())
    if master:
        state = dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(), iter=it)
        torch.save(state | dict(scheduler=scheduler.state_dict(), rng=rng), ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)
    if ddp:
        dist.barrier()


# -- training loop: `it` counts optimizer steps, the first is iter 1 -----------------------
for it in range(start, args.max_iters + 1):
    x, y = get_batch("train", gen)
    optimizer.zero_grad(set_to_none=True)
    loss = model(x, y)
    loss.backward()
    lr = optimizer.param_groups[0]["lr"]  # the lr this step runs at
    optimizer.step()
    scheduler.step()  # after optimizer.step(), before the next zero_grad (grad_norm reads grads)
    if master and it % args.log_interval == 0:
        print(f"iter {it}: loss {loss.item():.4f}, lr {lr!r}", flush=True)
    if it % args.eval_interval == 0 or it == args.max_iters:
        val = estimate_val_loss()
        if master:
            print(f"step {it}: val loss {val:.4f}", flush=True)
        if scheduler.schedule.metric_driven:
            scheduler.step(val)  # plateau: fed the val loss, the same on every rank
        save_checkpoint(it)

if ddp:
    dist.destroy_process_group()
