"""The embedded offline corpus: a small invented world, written out as English documents.

Everything here is a pure function of a seed, so the corpus is never stored: chunk `i` of a
split is regenerated on demand, identically on every machine. The world itself (who lives
where, who owns which pet, favourite colours) is fixed by `WORLD_SEED`, so the same facts
recur across thousands of documents and a tiny model can learn them; stories, fact sheets,
number drills and word problems with worked answers give it grammar, recall and arithmetic.

Held-out data is disjoint by construction, not by luck:
- documents: train chunk i and val chunk i are drawn from different seed spaces;
- word problems: each problem falls in the "val" partition if a hash of its numbers and
  template says so (1 in 10); the train corpus only ever contains "train" problems, so the
  RL/eval engineer can draw `word_problem(rng, split="val")` problems never seen in training.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from picochat.data import synthetic_everyday as E
from picochat.data.synthetic_world import (
    ANIMALS,
    COLOURS,
    JOBS,
    NAMES,
    NUMBER_WORDS,
    OBJECTS,
    PET_NAMES,
    PLACES,
    THINGS,
    TOWNS,
    WORLD,
    WORLD_SEED,
    An,
    Person,
    an,
)

# the invented world is part of this module's interface (tests and tasks read WORLD, NAMES, ...)
__all__ = ["ANIMALS", "COLOURS", "JOBS", "NAMES", "NUMBER_WORDS", "OBJECTS", "PET_NAMES", "PLACES", "THINGS", "TOWNS",
           "WORLD", "WORLD_SEED", "An", "Person", "an", "WordProblem", "word_problem", "problem_split", "small_talk",
           "document", "chunk", "chunk_seed", "DOCS_PER_CHUNK", "NUM_CHUNKS"]

DOCS_PER_CHUNK = 64
NUM_CHUNKS = {"train": 20_000, "val": 40}  # ~1.3M train documents (~0.8 GB): effectively endless


# ---------------------------------------------------------------------------- word problems

@dataclass
class WordProblem:
    question: str
    expression: str  # e.g. "12+7": what a calculator tool would be given
    answer: int
    solution: str = ""  # the worked answer in prose, e.g. "12 + 7 = 19, so Mia has 19 apples now."


def _problem_add(rng: random.Random, who: str, obj: str) -> WordProblem:
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    q = rng.choice([f"{who} has {a} {obj} and buys {b} more. How many {obj} does {who} have now?",
                    f"{who} had {a} {obj}. A friend gave {who} {b} more. How many {obj} does {who} have now?",
                    f"There are {a} {obj} in one box and {b} {obj} in another box. How many {obj} are there "
                    "in all?"])
    tail = "there are" if q.startswith("There") else f"{who} has"
    return WordProblem(q, f"{a}+{b}", a + b, f"{a} + {b} = {a + b}, so {tail} {a + b} {obj}.")


def _problem_sub(rng: random.Random, who: str, obj: str) -> WordProblem:
    a = rng.randint(10, 99)
    b = rng.randint(1, a)
    q = rng.choice([f"{who} has {a} {obj} and gives away {b}. How many {obj} does {who} have left?",
                    f"{who} had {a} {obj} but lost {b} of them. How many {obj} does {who} have left?",
                    f"A shop had {a} {obj} and sold {b}. How many {obj} are left in the shop?"])
    tail = "the shop has" if "shop" in q else f"{who} has"
    return WordProblem(q, f"{a}-{b}", a - b, f"{a} - {b} = {a - b}, so {tail} {a - b} {obj} left.")


def _problem_mul(rng: random.Random, who: str, obj: str) -> WordProblem:
    a, b = rng.randint(2, 12), rng.randint(2, 30)
    q = rng.choice([f"{who} has {a} bags with {b} {obj} in each bag. How many {obj} does {who} have?",
                    f"{who} buys {a} boxes of {obj}. Each box holds {b} {obj}. How many {obj} did {who} buy?",
                    f"There are {a} rows of {obj} with {b} {obj} in each row. How many {obj} are there?"])
    tail = "there are" if q.startswith("There") else f"{who} has"
    return WordProblem(q, f"{a}*{b}", a * b, f"{a} * {b} = {a * b}, so {tail} {a * b} {obj}.")


def _problem_two_step(rng: random.Random, who: str, obj: str) -> WordProblem:
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    c = rng.randint(1, a * b)
    q = (f"{who} has {a} jars with {b} {obj} in each jar, and then gives {c} {obj} to a friend. "
         f"How many {obj} does {who} have left?")
    ab = a * b
    return WordProblem(q, f"{a}*{b}-{c}", ab - c,
                       f"{a} * {b} = {ab}, and {ab} - {c} = {ab - c}, so {who} has {ab - c} {obj} left.")


_PROBLEM_KINDS = (_problem_add, _problem_sub, _problem_mul, _problem_two_step)


def problem_split(p: WordProblem) -> str:
    """Which partition a problem belongs to: a stable hash of its question (1 in 10 is 'val')."""
    return "val" if zlib.crc32(p.question.encode()) % 10 == 0 else "train"


def word_problem(rng: random.Random, split: str = "train") -> WordProblem:
    """A random + - * word problem (answers 0..~1000) from the given partition ('train' or 'val')."""
    while True:
        who, obj = rng.choice(NAMES), rng.choice(OBJECTS)
        p = rng.choice(_PROBLEM_KINDS)(rng, who, obj)
        if problem_split(p) == split:
            return p


# ---------------------------------------------------------------------------- conversations

def _qa_about_world(rng: random.Random) -> tuple[str, str]:
    p = WORLD[rng.choice(NAMES)]
    pairs = [
        (f"Where does {p.name} live?", f"{p.name} lives in {p.town}."),
        (f"What is {p.name}'s favourite colour?", f"{p.name}'s favourite colour is {p.colour}."),
        (f"What pet does {p.name} have?", f"{p.name} has {an(p.pet)} named {p.pet_name}."),
        (f"What does {p.name} do for work?", f"{p.name} works as {an(p.job)}."),
        (f"How old is {p.name}?", f"{p.name} is {p.age} years old."),
        (f"Who is {p.name}'s best friend?", f"{p.name}'s best friend is {p.friend}."),
        (f"What sound does {an(p.pet)} make?", f"{An(p.pet)} {ANIMALS[p.pet][0]}."),
        (f"What does {an(p.pet)} eat?", f"{An(p.pet)} eats {ANIMALS[p.pet][2]}."),
    ]
    return rng.choice(pairs)


def small_talk(rng: random.Random) -> list[dict]:
    """A short user/assistant conversation about the invented world (2-3 exchanges)."""
    greetings = [("Hi!", "Hello! How can I help you today?"), ("Hello there.", "Hi! What would you like to know?"),
                 ("Good morning!", "Good morning! What can I do for you?")]
    msgs: list[dict] = []
    if rng.random() < 0.6:
        u, a = rng.choice(greetings)
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    for _ in range(rng.randint(1, 2)):
        if rng.random() < 0.3:
            p = word_problem(rng)
            u, a = p.question, p.solution
        else:
            u, a = _qa_about_world(rng)
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    if rng.random() < 0.3:
        msgs += [{"role": "user", "content": rng.choice(["Thanks!", "Thank you.", "Great, thanks."])},
                 {"role": "assistant", "content": rng.choice(["You're welcome!", "Happy to help!"])}]
    return msgs


# ---------------------------------------------------------------------------- documents

def _person_facts(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    facts = [f"{p.name} lives in {p.town}.", f"{p.name} is {p.age} years old.",
             f"{p.name} works as {an(p.job)}.", f"{p.name}'s favourite colour is {p.colour}.",
             f"{p.name} has {an(p.pet)} named {p.pet_name}.", f"{p.name}'s best friend is {p.friend}.",
             f"{p.name} likes to eat {p.food}.",
             f"{p.pet_name} the {p.pet} {ANIMALS[p.pet][0]} and lives in {ANIMALS[p.pet][1]}."]
    rng.shuffle(facts)
    return f"All about {p.name}. " + " ".join(facts[: rng.randint(4, len(facts))])


def _animal_facts(rng: random.Random) -> str:
    out = []
    for animal in rng.sample(list(ANIMALS), rng.randint(3, 6)):
        sound, home, food, can = ANIMALS[animal]
        s = [f"{An(animal)} {sound}.", f"{An(animal)} lives in {home}.", f"{An(animal)} eats {food}.",
             f"{An(animal)} can {can}."]
        rng.shuffle(s)
        out.append(" ".join(s[: rng.randint(2, 4)]))
    return " ".join(out)


def _number_drill(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(6, 14)):
        kind = rng.random()
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        if kind < 0.35:
            lines.append(f"{a} + {b} = {a + b}.")
        elif kind < 0.6:
            hi, lo = max(a, b), min(a, b)
            lines.append(f"{hi} - {lo} = {hi - lo}.")
        elif kind < 0.8:
            a, b = rng.randint(1, 12), rng.randint(1, 12)
            lines.append(f"{a} * {b} = {a * b}.")
        elif kind < 0.9:
            lines.append(f"{NUMBER_WORDS[a].capitalize()} comes after {NUMBER_WORDS[a - 1]}." if a
                         else "Zero is the smallest whole number.")
        else:
            lines.append(f"{a} is an {'even' if a % 2 == 0 else 'odd'} number.")
    return rng.choice(["Practice with numbers.", "Some sums.", "Math facts.", "Let us count."]) + " " + \
        " ".join(lines)


def _word_problems(rng: random.Random) -> str:
    out = []
    for i in range(rng.randint(2, 4)):
        p = word_problem(rng, "train")
        out.append(f"Problem {i + 1}: {p.question} Answer: {p.solution}")
    return "\n".join(out)


def _story(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    friend = WORLD[p.friend]
    place, thing = rng.choice(PLACES), rng.choice(THINGS)
    others = [n for n in NAMES if n not in (p.name, friend.name)]
    weather = rng.choice(["sunny", "rainy", "windy", "cold", "warm", "cloudy"])
    opening = rng.choice([f"Once upon a time, in the town of {p.town}, there lived {an(p.job)} named {p.name}.",
                          f"It was a {weather} day in {p.town}.",
                          f"{p.name} woke up early one {weather} morning."])
    middle = [f"{p.name} walked to {place} with {p.pet_name} the {p.pet}.",
              f"At {place}, {p.name} found {an(thing)}.",
              f"{p.name} showed the {thing} to {friend.name}, who was very surprised.",
              f"\"Look what I found!\" said {p.name}.",
              f"{p.pet_name} {ANIMALS[p.pet][0]} happily.",
              f"{friend.name} said, \"Let us take it home and show everyone.\"",
              f"The sky was {rng.choice(COLOURS)} and the air was {weather}.",
              f"{p.name} counted {rng.randint(2, 9)} birds on the roof.",
              f"On the way, they met {rng.choice(others)}, who was carrying {an(rng.choice(THINGS))}."]
    body = [middle[0], middle[1]] + rng.sample(middle[2:], rng.randint(2, 5))
    problem = rng.choice([f"But then the {thing} was lost in the grass.",
                          f"Suddenly it began to rain, and {p.name} had to run to {rng.choice(PLACES)}.",
                          f"But {p.pet_name} ran away to {rng.choice(PLACES)}."])
    ending = rng.choice([f"In the end, {p.name} and {friend.name} found everything, and they were happy.",
                         f"That evening, {p.name} ate {p.food} and told the whole story.",
                         f"{p.name} learned that a good friend is the best thing to have.",
                         f"From that day on, {p.name} always took {p.pet_name} along."])
    return " ".join([opening, *body, problem, ending])


def _dialogue(rng: random.Random) -> str:
    msgs = small_talk(rng)
    return "\n".join(("Question: " if m["role"] == "user" else "Answer: ") + m["content"] for m in msgs)


_DOC_KINDS = ((_story, 0.12), (_person_facts, 0.07), (_animal_facts, 0.04), (_number_drill, 0.06),
              (_word_problems, 0.13), (_dialogue, 0.07), (E.general_facts, 0.03), (E.comparisons, 0.04),
              (E.town, 0.02), (E.spelling, 0.03), (E.day, 0.08), (E.jobs, 0.03), (E.places, 0.02), (E.describe, 0.07),
              (E.wild, 0.04), (E.home, 0.04), (E.school, 0.04), (E.trip, 0.04), (E.words, 0.03))


def _piece(rng: random.Random) -> str:
    r, acc = rng.random(), 0.0
    for make, weight in _DOC_KINDS:
        acc += weight
        if r < acc:
            return make(rng)
    return _story(rng)


def document(rng: random.Random) -> str:
    """One document of a few hundred to ~1000 characters: stories, facts, drills, problems, Q&A."""
    target = rng.randint(100, 800)
    text = _piece(rng)
    while len(text) < target:
        more = _piece(rng)
        if len(text) + len(more) > 1100:
            break
        text += "\n\n" + more
    return text


def chunk_seed(split: str, index: int) -> int:
    """Disjoint seed spaces per split: train seeds are even, val seeds are odd."""
    if split not in NUM_CHUNKS:
        raise ValueError(f"unknown split '{split}' (train or val)")
    return 2 * index + (split == "val")


def chunk(split: str, index: int) -> list[str]:
    """The `index`-th chunk of DOCS_PER_CHUNK documents of a split; any chunk can be made directly."""
    rng = random.Random(chunk_seed(split, index))
    return [document(rng) for _ in range(DOCS_PER_CHUNK)]
