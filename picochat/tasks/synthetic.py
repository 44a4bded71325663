"""The offline demo tasks, built on `picochat.data.synthetic`: arithmetic word problems solved
with the calculator tool, and small talk. They need no data files, so the demo preset can
mid-train and SFT anywhere.

Example i of a split comes from `random.Random("<task>/<split>/<seed>/<i>")` (tasks/common.py:
GeneratedTask): the train and test streams are seeded from disjoint strings, and each example is
reproducible on its own.
"""

from __future__ import annotations

from picochat.tasks.common import GeneratedTask, extract_final_number, same_number


def calculator_answer(expression: str, answer: int, solution: str = "") -> list[dict]:
    """The assistant's parts for a word problem: call the calculator, explain, answer after ####."""
    explanation = solution or f"The answer is {answer}."
    return [
        {"type": "text", "text": "Let me use the calculator.\n\n"},
        {"type": "python", "text": expression},
        {"type": "python_output", "text": str(answer)},
        {"type": "text", "text": f"\n\n{explanation}\n\n#### {answer}"},
    ]


class WordProblems(GeneratedTask):
    """Arithmetic word problems; correct when the number after `####` equals the answer."""

    name = "wordproblems"

    def __getitem__(self, i: int) -> dict:
        from picochat.data.synthetic import word_problem

        # the generator partitions problems by a hash of the question, so no test question is
        # ever a training question; the seeds of the two streams differ as well
        p = word_problem(self._rng(i), split="train" if self.split == "train" else "val")
        messages = [
            {"role": "user", "content": p.question},
            {"role": "assistant", "content": calculator_answer(p.expression, p.answer, p.solution)},
        ]
        return {"messages": messages, "answer": str(p.answer), "expression": p.expression}

    def evaluate(self, example: dict, reply: str) -> bool:
        return same_number(extract_final_number(reply), example["answer"])


class SmallTalk(GeneratedTask):
    """Short synthetic chit-chat (training only: there is no right answer to score)."""

    name = "smalltalk"

    def __getitem__(self, i: int) -> dict:
        from picochat.data.synthetic import small_talk

        return {"messages": small_talk(self._rng(i))}
