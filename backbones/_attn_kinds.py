"""The skeletons' attention vocabulary: ``attn_kinds`` words, and the one parser of the official letter codes.

The four skeletons that Agent and InLine swap their attention into (:mod:`backbones._swin`, :mod:`backbones._pvt`,
:mod:`backbones._deit`, :mod:`backbones._cswin`) take ``attn_kinds``: per stage, the kind of each block, in words
(``'agent'``, ``'inline'``, and the skeleton's own softmax attention: Swin ``'window'``, PVT ``'sra'``, DeiT
``'softmax'``, CSwin ``'stripe'``; DeiT is one stage of ``depth`` blocks). The official repositories write the same
choice as a letter code (``ATTN_TYPE: AAMB2``) whose letters differ per repository (Agent ``A`` / ``B``, InLine ``I``
/ ``S``); a family declares what its letters mean per skeleton (``Family.letters``) and :func:`parse_attn_code` turns
its codes into ``attn_kinds``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ['check_attn_kinds', 'check_letters', 'kind_kwargs', 'parse_attn_code']

Letters = Mapping[str, 'str | tuple[str, str]']


def parse_attn_code(code: str, depths: Sequence[int], letters: Letters) -> list[list[str]]:
    """Per stage, the kind of each block, from a letter code.

    ``letters``: letter -> kind, and ``'M'`` (where the official code has mixed stages) -> ``(leading, trailing)``
    kinds. The code is one letter per stage (``'AAAB'``), an ``M`` stage's first ``n`` blocks the leading kind and the
    rest the trailing one, ``n`` the digits that end the code (``'AAMB2'``, as the official ``BasicLayer``); or one
    letter per block (``'AAAABBBBBBBB'``: Agent-DeiT-B's official ``agent_layer=4``). Raises ``ValueError`` naming
    what is wrong.
    """
    depths = [int(d) for d in depths]
    n, total = len(depths), sum(depths)
    m = re.fullmatch(r'([A-Za-z]*)(\d*)', code) if isinstance(code, str) else None
    known = sorted(letters)
    if m is None:
        raise ValueError(f'attn_type must be a letter code (letters {known}), got {code!r}')
    head, tail = m.groups()
    unknown = sorted(set(head) - set(letters))
    if unknown:
        raise ValueError(f'attn_type {code!r} uses {unknown}: not letters of this code (letters {known})')
    if len(head) == n:
        if ('M' in head) != bool(tail):
            raise ValueError(f'attn_type {code!r}: a mixed stage (M) needs the count of its leading blocks at the end '
                             f'of the code (e.g. AAMB2), and a count needs an M stage')
        mix = int(tail or 0)
        return [[letters['M'][j >= mix] if c == 'M' else letters[c] for j in range(d)] for c, d in zip(head, depths)]
    if len(head) == total and not tail and 'M' not in head:
        blocks = iter(head)
        return [[letters[next(blocks)] for _ in range(d)] for d in depths]
    raise ValueError(f'attn_type must be one letter per stage ({n}'
                     f'{", then the leading-block count of an M stage" if "M" in letters else ""}) or one per block '
                     f'({total}), from {known}, got {code!r}')


def check_attn_kinds(attn_kinds: Sequence[Sequence[str]] | None, depths: Sequence[int], kinds: Sequence[str]
                     ) -> tuple[tuple[str, ...], ...]:
    """A skeleton's ``attn_kinds`` checked against its ``depths`` and the ``kinds`` it builds (``None``: its own
    softmax attention, ``kinds[0]``, in every block); returned as tuples."""
    if attn_kinds is None:
        return tuple((kinds[0],) * int(d) for d in depths)
    if (isinstance(attn_kinds, str) or any(isinstance(s, str) for s in attn_kinds)
            or [len(s) for s in attn_kinds] != list(depths)):
        raise ValueError(f'attn_kinds must give per stage one kind per block (depths {tuple(depths)}; an official '
                         f'letter code goes in attn_type, through timm.create_model), got {attn_kinds!r}')
    unknown = sorted({k for stage in attn_kinds for k in stage} - set(kinds))
    if unknown:
        raise ValueError(f'attn_kinds has {unknown}; this model builds {tuple(kinds)}')
    return tuple(tuple(stage) for stage in attn_kinds)


def check_letters(letters: Letters, kinds: Sequence[str], where: str) -> None:
    """A family's letter table for one skeleton (``kinds``: what it builds): single capital letters to kinds, ``M``
    to a ``(leading, trailing)`` pair. Raises ``ValueError`` naming ``where``."""
    for letter, kind in letters.items():
        pair = letter == 'M'
        if not (len(letter) == 1 and letter.isupper()) or (
                not (isinstance(kind, tuple) and len(kind) == 2) if pair else not isinstance(kind, str)):
            raise ValueError(f'{where}: letters map capital letters to kinds and M to a (leading, trailing) pair of '
                             f'kinds, got {letter!r}: {kind!r}')
        unknown = sorted(set(kind if pair else (kind,)) - set(kinds))
        if unknown:
            raise ValueError(f'{where}: letter {letter!r} names {unknown}; the skeleton builds {tuple(kinds)}')


def kind_kwargs(attn_kwargs: Mapping[str, Mapping[str, Any]] | None, kind: str, index: int) -> dict[str, Any]:
    """The extra arguments ``attn_kwargs`` (kind -> keyword arguments) gives the attention class of ``kind`` at
    ``index`` (a stage; DeiT's: a block): each value as given, or a tuple / list's entry ``index``."""
    return {k: (v[index] if isinstance(v, (tuple, list)) else v) for k, v in (attn_kwargs or {}).get(kind, {}).items()}
