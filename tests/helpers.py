"""Helpers shared by tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import torch


def fingerprint(model: torch.nn.Module) -> list:
    """What a method must never change: module types, inplace flags, hooks, parameter identity and version."""
    rows = []
    for name, module in model.named_modules():
        hooks = tuple(
            len(getattr(module, attr, {}))
            for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        )
        rows.append((name, type(module).__name__, getattr(module, "inplace", None), hooks, module.training))
    for name, param in model.named_parameters():
        rows.append((name, param.data_ptr(), param._version, param.requires_grad))
    globals_ = torch.nn.modules.module
    rows.append((len(globals_._global_forward_hooks), len(globals_._global_backward_hooks)))
    rows.append(torch._C._len_torch_function_stack())
    return rows


def rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_methods(model, x, layer_names, methods: dict, strategy: str = "loop", info=None):
    """Run methods (name -> parameter dict) on ``model`` for batch ``x`` through the engine's own shared pass;
    return {(method, layer or None): [Output per image]}."""
    from pipeline.engine.work import run_methods as engine_run
    from pipeline.methods import method_class
    from pipeline.methods.base import ModelInfo
    from pipeline.methods.params import parse_params
    from pipeline.models.layers import conv_layers

    by_name = {layer.name: layer for layer in conv_layers(model)}
    layers = [by_name[name] for name in dict.fromkeys(layer_names)]
    chosen = [
        method_class(name)(parse_params(method_class(name).Params, params, name)) for name, params in methods.items()
    ]
    info = info or ModelInfo("test", (), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None)
    found: dict = {}
    for method, output in engine_run(model, x, layers, chosen, info, strategy=strategy):
        found.setdefault((method.name, output.layer), []).append(output)
    return found


_LINK = re.compile(r'\s(href|src|data-chunk)="([^"]*)"')
CHUNK_PREFIX, CHUNK_SUFFIX = "FMI.chunk(", ");\n"


def read_chunk(path: Path) -> dict:
    """A report chunk's data: ``{"id": section id, "html": the section's HTML}``."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith(CHUNK_PREFIX) and text.endswith(CHUNK_SUFFIX), text[:200]
    return json.loads(text[len(CHUNK_PREFIX) : -len(CHUNK_SUFFIX)])


@dataclass
class Report:
    """What a browser can reach from a report's index.html: pages, chunks, and every link they hold."""

    pages: dict[Path, str] = field(default_factory=dict)  # page -> its HTML
    chunks: dict[Path, str] = field(default_factory=dict)  # chunk -> the HTML it puts into its page
    links: list[tuple[Path, str, Path]] = field(default_factory=list)  # (document, attribute value, target)

    def targets(self, suffix: str, attr: str | None = None) -> set[Path]:
        return {t for _, value, t in self.links if t.suffix == suffix and (attr is None or f'{attr}="' in value)}

    def broken(self) -> list[str]:
        return [f"{doc}: {value}" for doc, value, target in self.links if not target.is_file()]


def walk_report(folder: Path) -> Report:
    """Follow every href, src and chunk from ``folder/index.html`` the way a browser resolves them."""
    report, pending = Report(), [folder / "index.html"]
    while pending:
        page = pending.pop()
        if page in report.pages:
            continue
        report.pages[page] = page.read_text(encoding="utf-8")
        documents = [(page, report.pages[page])]
        for attr, value in _LINK.findall(report.pages[page]):
            if attr == "data-chunk":
                chunk = (page.parent / unquote(html.unescape(value))).resolve()
                if chunk.is_file():
                    report.chunks[chunk] = read_chunk(chunk)["html"]
                    documents.append((chunk, report.chunks[chunk]))
        for document, text in documents:
            for attr, value in _LINK.findall(text):
                path = unquote(html.unescape(value)).partition("#")[0]
                if not path:
                    continue  # a link within the page
                target = (page.parent / path).resolve()
                report.links.append((document, f'{attr}="{value}"', target))
                if target.suffix == ".html" and target.is_file():
                    pending.append(target)
    return report


def activation_and_grad(model, x, layer: str, image: int, cls: int):
    """A (the conv's own output) and ∂y_cls/∂A for one image, with a forward hook and plain autograd; also the
    logits. The hook hands the rest of the network a clone, so an in-place activation after the conv (vgg,
    alexnet) changes the clone and A stays as the conv produced it."""
    store = {}

    def hook(module, inputs, output):
        store["a"] = output
        return output.clone()

    handle = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x.clone().requires_grad_(True))
            (g,) = torch.autograd.grad(logits[image, cls], store["a"])
    finally:
        handle.remove()
    return store["a"][image].detach(), g[image], logits.detach()
