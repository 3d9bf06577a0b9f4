"""ROUGE-L recall exactly as RWKU computed it: the PyPI ``rouge`` package (1.0.1), ``rouge-l``, field ``r``.

That package's definition, reproduced here without importing it (it is a test dependency only):

1. Sentences: the text is split on every ``.``; pieces of length 0 are dropped (a piece that is only
   whitespace is kept and becomes the empty sentence ``""``); inside each piece runs of whitespace
   (``str.split()``) become one space.
2. Words: each sentence is split on ``" "``; the empty sentence is the one word ``""``.
   Matching is exact and case-sensitive ("portland" does not match "Portland"; "Maine," does not
   match "Maine").
3. Summary-level union LCS with *sets* of words (the package's default ``exclusive=True``): for each
   reference sentence in turn and each prediction sentence, one longest common subsequence of their
   word lists is reconstructed (ties broken the package's way); the words of all these LCSs are
   collected into one set. Recall = size of that set / number of distinct words in the reference.

Edge cases: when the prediction or the reference has no sentence (it is empty or only dots) the
package raises ``ValueError``; RWKU never reached that for predictions because it replaces an empty
output with ``NOANSWER`` (probes.py does the same). Here an empty prediction or reference scores 0.0.
"""

from __future__ import annotations


def sentences(text: str) -> list[str]:
    """The package's sentence split: on ``.``, empty pieces dropped, whitespace runs collapsed."""
    return [" ".join(piece.split()) for piece in text.split(".") if len(piece) > 0]


def _words(sentence: str) -> list[str]:
    return sentence.split(" ")


def _lcs_words(x: list[str], y: list[str]) -> list[str]:
    """The words of one LCS of ``x`` and ``y``, reconstructed with the package's tie-breaking."""
    n, m = len(x), len(y)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        xi, row, prev = x[i - 1], table[i], table[i - 1]
        for j in range(1, m + 1):
            if xi == y[j - 1]:
                row[j] = prev[j - 1] + 1
            else:
                row[j] = max(prev[j], row[j - 1])
    out = []
    i, j = n, m
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            out.append(x[i - 1])
            i -= 1
            j -= 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    out.reverse()
    return out


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of ``prediction`` against ``reference`` (0..1), identical to ``rouge`` 1.0.1's ``rouge-l`` ``r``."""
    hyp = sentences(prediction)
    ref = sentences(reference)
    if not hyp or not ref:
        return 0.0
    ref_vocab = {w for s in ref for w in _words(s)}
    hyp_words = [_words(s) for s in hyp]
    union: set[str] = set()
    for ref_s in ref:
        ref_words = _words(ref_s)
        for words in hyp_words:
            union.update(_lcs_words(ref_words, words))
    return len(union) / len(ref_vocab)
