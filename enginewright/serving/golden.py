"""Golden outputs: what a build's candidate answered, recorded in its bundle, so a live release can later be compared
with exactly what the gate judged.

Two records, both in the bundle (and so under its manifest's checksums):

    golden/continuations.json   the candidate's greedy continuations of a fixed prompt set (token ids and text,
                                with each prompt's sha256)
    golden/answers.json         the candidate's answer to each document of a fixed evaluation subset, asked as a
                                lettered multiple-choice question and answered by greedy generation (with the
                                document's and the prompt's sha256)

Why generation and not the gate's loglikelihood answers: the endpoint that serves a release is an OpenAI-compatible
completions server, and trtllm-serve's `/v1/completions` with `echo` returns the prompt *text* but log-probabilities
only for the generated tokens (NVIDIA/TensorRT-LLM tensorrt_llm/serve/postprocess_handlers.py @
01bf19231d29d8f0766e31c117d1cf39ed00d3d5, `completion_response_post_processor`: `create_completion_logprobs(
output.token_ids, ...)`), so lm-eval's `local-completions` loglikelihood (which reads the prompt's `token_logprobs`)
cannot run against it. A generated answer letter can: lm-eval's HFLM `generate_until` at build time, its `local-completions`
`generate_until` against the endpoint, with the same requests.

No torch import: the verify side (a CPU box next to the serving host) reads and compares these records.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from enginewright.gate.paired_stats import mcnemar_exact_p
from enginewright.keys.hashing import sha256_json

GOLDEN_DIR = "golden"
CONTINUATIONS_FILE = f"{GOLDEN_DIR}/continuations.json"
ANSWERS_FILE = f"{GOLDEN_DIR}/answers.json"
# The fixed prompt set: varied enough that another checkpoint diverges early on most of them (greedy decoding of
# the *same* checkpoint under other kernels diverges late: see `ReplayReport.prefix_share`).
GOLDEN_PROMPTS = (
    "The capital of France is",
    "Water boils at a temperature of",
    "Write one sentence about the ocean:",
    "The three primary colors are",
    "def fibonacci(n):",
    "Translate to French: Good morning, how are you?",
    "The largest planet in the solar system is",
    "List three uses of a paperclip:",
    "Once upon a time, in a small village,",
    "The chemical symbol for gold is",
    "Explain in one sentence why the sky is blue.",
    "2 + 2 =",
    "The first president of the United States was",
    "A haiku about winter:",
    "import numpy as np\n",
    "The opposite of hot is",
)
GOLDEN_MAX_NEW_TOKENS = 24
# The fixed evaluation subset: the first SUBSET_SIZE documents of the task's evaluation split, in file order.
SUBSET_SIZE = 40
ANSWER_MAX_TOKENS = 2  # " A" is one token for Llama-family tokenizers; two leave room for a leading space or newline
ANSWER_STOP = ["\n"]
LETTERS = "ABCDEFGHIJ"
# Which tasks have a lettered formulation, and which split it reads (the split the gate evaluates).
SUBSET_SPLITS: dict[str, str] = {"arc_easy": "test", "arc_challenge": "test", "mmlu": "test"}


@dataclass(frozen=True)
class Continuation:
    prompt: str
    prompt_sha256: str
    token_ids: list[int]
    text: str


@dataclass(frozen=True)
class Answer:
    doc_sha256: str
    prompt_sha256: str
    answer: str  # the letter the model generated first, "" when it generated none
    gold: str
    prompt: str  # kept, so the verify side asks the very question without the evaluation data
    choices: int

    @property
    def correct(self) -> bool:
        return self.answer == self.gold


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def choice_prompt(task: str, doc: dict[str, Any]) -> tuple[str, str]:
    """(prompt, gold letter) of one document as a lettered multiple-choice question."""
    if task in ("arc_easy", "arc_challenge"):
        texts, labels = doc["choices"]["text"], doc["choices"]["label"]
        letters = [LETTERS[i] for i in range(len(texts))]
        # ARC labels a few questions 1-4 instead of A-D: the gold is the answer key's position either way.
        gold = letters[list(labels).index(doc["answerKey"])]
    elif task == "mmlu":
        texts = doc["choices"]
        letters = [LETTERS[i] for i in range(len(texts))]
        gold = letters[int(doc["answer"])]
    else:
        raise ValueError(f"task {task!r} has no lettered formulation; known: {', '.join(SUBSET_SPLITS)}")
    options = "\n".join(f"{letter}. {text}" for letter, text in zip(letters, texts, strict=True))
    return f"Question: {doc['question'].strip()}\n{options}\nAnswer:", gold


def answer_letter(generated: str, choices: int) -> str:
    """The first standalone choice letter in a generated answer ("" when there is none)."""
    match = re.search(rf"\b([{LETTERS[:choices]}])\b", generated)
    return match.group(1) if match else ""


def subset_task(tasks: list[str]) -> str | None:
    """The first evaluated task with a lettered formulation: the one the golden answers use."""
    return next((t for t in tasks if t in SUBSET_SPLITS), None)


def subset_documents(data_dir: Path, task: str, size: int = SUBSET_SIZE) -> list[tuple[str, dict[str, Any]]]:
    """The fixed subset: (sha256 of the document's JSON line, document) for the first `size` documents."""
    lines = (data_dir / task / f"{SUBSET_SPLITS[task]}.jsonl").read_text().splitlines()[:size]
    return [(text_sha256(line), json.loads(line)) for line in lines if line.strip()]


@dataclass(frozen=True)
class SubsetRequest:
    doc_sha256: str
    prompt: str
    gold: str
    choices: int


def subset_requests(task: str, documents: list[tuple[str, dict[str, Any]]]) -> list[SubsetRequest]:
    requests = []
    for doc_sha, doc in documents:
        prompt, gold = choice_prompt(task, doc)
        count = len(doc["choices"]["text"]) if task.startswith("arc") else len(doc["choices"])
        requests.append(SubsetRequest(doc_sha, prompt, gold, count))
    return requests


def answers_of(requests: list[SubsetRequest], generations: list[str]) -> list[Answer]:
    return [Answer(r.doc_sha256, text_sha256(r.prompt), answer_letter(g, r.choices), r.gold, r.prompt, r.choices)
            for r, g in zip(requests, generations, strict=True)]


def requests_of(answers: list[Answer]) -> list[SubsetRequest]:
    """The subset's requests again, from a bundle's recorded answers."""
    return [SubsetRequest(a.doc_sha256, a.prompt, a.gold, a.choices) for a in answers]


@dataclass(frozen=True)
class Golden:
    prompts_sha256: str
    max_new_tokens: int
    continuations: list[Continuation]
    task: str | None
    answers: list[Answer]

    @property
    def digest(self) -> str:
        return sha256_json(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return {"prompts_sha256": self.prompts_sha256, "max_new_tokens": self.max_new_tokens,
                "continuations": [asdict(c) for c in self.continuations], "task": self.task,
                "answers": [asdict(a) for a in self.answers]}


def prompts_digest(prompts: list[str]) -> str:
    return sha256_json(prompts)


def write_golden(bundle_dir: Path, golden: Golden) -> None:
    (bundle_dir / GOLDEN_DIR).mkdir(parents=True, exist_ok=True)
    doc = golden.to_json()
    (bundle_dir / CONTINUATIONS_FILE).write_text(json.dumps(
        {k: doc[k] for k in ("prompts_sha256", "max_new_tokens", "continuations")}, indent=1) + "\n")
    (bundle_dir / ANSWERS_FILE).write_text(json.dumps({k: doc[k] for k in ("task", "answers")}, indent=1) + "\n")


def read_golden(bundle_dir: Path) -> Golden | None:
    """The bundle's golden records, or None for a bundle built before they existed."""
    if not (bundle_dir / CONTINUATIONS_FILE).is_file():
        return None
    cont = json.loads((bundle_dir / CONTINUATIONS_FILE).read_text())
    answers = json.loads((bundle_dir / ANSWERS_FILE).read_text()) if (bundle_dir / ANSWERS_FILE).is_file() else {}
    return Golden(prompts_sha256=cont["prompts_sha256"], max_new_tokens=int(cont["max_new_tokens"]),
                  continuations=[Continuation(**c) for c in cont["continuations"]], task=answers.get("task"),
                  answers=[Answer(**a) for a in answers.get("answers", [])])


@dataclass(frozen=True)
class ReplayReport:
    matched: int  # continuations equal to the build's, character for character
    total: int
    prefix_share: float  # mean share of each build continuation the served one reproduces before it diverges
    first_mismatch: str | None  # "prompt → expected … got …" of the continuation that diverged first

    @property
    def exact_match(self) -> float:
        return self.matched / self.total if self.total else 1.0


def common_prefix_share(expected: str, served: str) -> float:
    if not expected:
        return 1.0 if not served else 0.0
    n = 0
    for a, b in zip(expected, served, strict=False):
        if a != b:
            break
        n += 1
    return n / len(expected)


def compare_continuations(golden: list[Continuation], served: list[str]) -> ReplayReport:
    """The served greedy texts against the build's, prompt by prompt: exact matches and the mean shared prefix.

    Greedy decoding amplifies any numeric difference: once one token differs, the rest follows another path. The
    same checkpoint under other kernels therefore diverges *late* (measured, SmolLM2 FP8, the simulated candidate
    against the same export served by the CPU stand-in: 13 of 16 exact, 94 % shared; with only the fp32 rounding of
    its input quantization changed, 2 of 16 exact, 51 % shared), another checkpoint *early* (0 of 16, 1 %; see
    docs/results.md). The prefix share is what tells them apart; the exact count is reported beside it."""
    shares = [common_prefix_share(g.text, got) for g, got in zip(golden, served, strict=True)]
    matched = sum(g.text == got for g, got in zip(golden, served, strict=True))
    worst = min(range(len(shares)), key=lambda i: shares[i], default=None)
    first = None
    if worst is not None and shares[worst] < 1.0:
        g = golden[worst]
        first = f"{g.prompt[:40]!r} → expected {g.text[:40]!r}, served {served[worst][:40]!r}"
    return ReplayReport(matched, len(golden), sum(shares) / len(shares) if shares else 1.0, first)


@dataclass(frozen=True)
class AnswerComparison:
    documents: int
    agreeing: int  # same letter as the build's candidate
    build_correct: int
    served_correct: int
    only_build_right: int
    only_served_right: int
    mcnemar_p: float  # exact two-sided McNemar over the discordant pairs

    @property
    def agreement(self) -> float:
        return self.agreeing / self.documents if self.documents else 1.0


def compare_answers(golden: list[Answer], served: list[Answer]) -> AnswerComparison:
    """Paired per document (matched by document hash, and the prompt hash must agree: the same question asked)."""
    by_doc = {a.doc_sha256: a for a in served}
    missing = [g.doc_sha256[:12] for g in golden if g.doc_sha256 not in by_doc]
    if missing:
        raise ValueError(f"the served answers miss {len(missing)} of the build's documents (first {missing[0]})")
    pairs = [(g, by_doc[g.doc_sha256]) for g in golden]
    asked = [g.doc_sha256[:12] for g, s in pairs if g.prompt_sha256 != s.prompt_sha256]
    if asked:
        raise ValueError(f"document {asked[0]} was asked with another prompt than the build's")
    only_build = sum(g.correct and not s.correct for g, s in pairs)
    only_served = sum(s.correct and not g.correct for g, s in pairs)
    return AnswerComparison(documents=len(pairs), agreeing=sum(g.answer == s.answer for g, s in pairs),
                            build_correct=sum(g.correct for g, _ in pairs),
                            served_correct=sum(s.correct for _, s in pairs), only_build_right=only_build,
                            only_served_right=only_served, mcnemar_p=mcnemar_exact_p(only_build, only_served))
