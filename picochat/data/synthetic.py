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

from picochat.data import synthetic_words as W

WORLD_SEED = 4242
DOCS_PER_CHUNK = 64
NUM_CHUNKS = {"train": 20_000, "val": 40}  # ~1.3M train documents (~0.8 GB): effectively endless

NAMES = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Lily", "Ben", "Ella", "Noah", "Ruby", "Finn", "Nora",
         "Jack", "Ivy", "Owen", "Rosa", "Theo", "Emma", "Hugo", "Luna", "Omar", "Anna", "Tom", "Maya",
         "Eli", "Sara", "Kai", "Jade", "Alex", "Nina", "Paul", "Iris", "Dan", "Lucy", "Ravi", "Cleo", "Ned"]
TOWNS = ["Oakton", "Riverby", "Stonehill", "Maple Bay", "Fernwood", "Brightwater", "Pinecrest",
         "Willow Creek", "Redcliff", "Lakeview", "Sunnyvale", "Ashford"]
PLACES = ["the market", "the park", "the library", "the school", "the river", "the bakery", "the farm",
          "the beach", "the forest", "the zoo", "the garden", "the station", "the museum", "the hill"]
ANIMALS = {  # animal -> (sound, home, what it eats, what it can do)
    "dog": ("barks", "a kennel", "meat", "run fast"), "cat": ("meows", "a basket", "fish", "climb trees"),
    "cow": ("moos", "a barn", "grass", "give milk"), "duck": ("quacks", "a pond", "seeds", "swim"),
    "horse": ("neighs", "a stable", "hay", "gallop"), "sheep": ("bleats", "a field", "grass", "grow wool"),
    "owl": ("hoots", "a tree", "mice", "see at night"), "frog": ("croaks", "a pond", "flies", "jump far"),
    "pig": ("oinks", "a sty", "apples", "dig in mud"), "bee": ("buzzes", "a hive", "nectar", "make honey"),
    "lion": ("roars", "the grassland", "meat", "hunt"), "mouse": ("squeaks", "a hole", "cheese", "hide"),
    "goat": ("bleats", "a hill", "leaves", "climb rocks"), "parrot": ("squawks", "a cage", "nuts", "talk"),
    "rabbit": ("squeaks", "a burrow", "carrots", "hop"), "fish": ("makes no sound", "the water", "worms",
                                                                   "swim"),
}
PET_NAMES = ["Biscuit", "Pepper", "Shadow", "Sunny", "Button", "Clover", "Milo", "Daisy", "Rocket",
             "Pebble", "Ziggy", "Honey", "Whiskers", "Bean", "Maple", "Scout"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "black", "brown"]
OBJECTS = ["apples", "pencils", "books", "marbles", "cookies", "stickers", "shells", "coins", "eggs",
           "cards", "flowers", "stones", "balloons", "cups", "oranges", "buttons", "boxes", "ribbons"]
THINGS = ["kite", "red ball", "small boat", "blue hat", "map", "lantern", "toy train", "jar of honey", "wooden box",
          "green umbrella", "drum", "bell", "basket of plums", "old compass", "orange scarf"]
JOBS = list(W.JOB_DUTIES)
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                "nineteen", "twenty"]


def an(phrase: str) -> str:
    """'owl' -> 'an owl', 'useful map' -> 'a useful map', 'honest cook' -> 'an honest cook'."""
    w = phrase.lower()
    vowel = w.startswith(("hon", "hour")) or (w[0] in "aeiou" and not w.startswith(("use", "uni", "one", "eu")))
    return ("an " if vowel else "a ") + phrase


def An(phrase: str) -> str:  # noqa: N802 - the sentence-initial form of an()
    s = an(phrase)
    return s[0].upper() + s[1:]


@dataclass(frozen=True)
class Person:
    name: str
    age: int
    town: str
    job: str
    colour: str
    pet: str
    pet_name: str
    friend: str
    food: str


def _build_world(seed: int = WORLD_SEED) -> dict[str, Person]:
    rng = random.Random(seed)
    foods = ["soup", "bread", "rice", "pasta", "pie", "cake", "apples", "pears", "cheese", "beans"]
    people = {}
    for i, name in enumerate(NAMES):
        people[name] = Person(
            name=name, age=rng.randint(6, 70), town=rng.choice(TOWNS), job=rng.choice(JOBS),
            colour=rng.choice(COLOURS), pet=rng.choice(list(ANIMALS)), pet_name=rng.choice(PET_NAMES),
            friend=NAMES[(i + rng.randint(1, len(NAMES) - 1)) % len(NAMES)], food=rng.choice(foods))
    return people


WORLD: dict[str, Person] = _build_world()


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


GENERAL_FACTS = [
    "The sky is blue on a clear day.", "Grass is green.", "Snow is white and cold.", "The sun is hot and bright.",
    "The moon shines at night.", "Fish live in water.", "Birds have wings and most birds can fly.",
    "Ice melts when it gets warm.", "Rain falls from clouds.", "A week has seven days.", "A year has twelve months.",
    "There are four seasons: spring, summer, autumn and winter.", "Bread is made from flour.",
    "Apples grow on trees.", "Bees make honey.", "A triangle has three sides.", "A square has four sides.",
    "Monday comes before Tuesday.", "Friday comes after Thursday.", "Plants need water and light to grow.",
    "Milk comes from cows.", "Cats like to sleep in warm places.", "Ten is more than nine.",
    "An hour has sixty minutes.", "A day has twenty-four hours.", "Water boils when it is very hot.",
]
SPELL_WORDS = sorted({*ANIMALS, *COLOURS, *(o.rstrip("s") for o in OBJECTS), "house", "tree", "river", "friend",
                      "happy", "garden", "school", "water", "bread", "light", "music", "window", "summer"})


def _general_facts(rng: random.Random) -> str:
    return " ".join(rng.sample(GENERAL_FACTS, rng.randint(4, 8)))


def _comparisons(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(2, 4)):
        a, b = (WORLD[n] for n in rng.sample(NAMES, 2))
        if a.age == b.age:
            out.append(f"{a.name} and {b.name} are both {a.age} years old, so they are the same age.")
            continue
        old, young = (a, b) if a.age > b.age else (b, a)
        out.append(rng.choice([
            f"{a.name} is {a.age} years old and {b.name} is {b.age} years old. {old.age} is more than "
            f"{young.age}, so {old.name} is older than {young.name}.",
            f"Who is older, {a.name} or {b.name}? {a.name} is {a.age} and {b.name} is {b.age}, so "
            f"{old.name} is older, by {old.age} - {young.age} = {old.age - young.age} years."]))
    return " ".join(out)


def _town(rng: random.Random) -> str:
    town = rng.choice(TOWNS)
    people = [p for p in WORLD.values() if p.town == town]
    if not people:
        return f"Nobody we know lives in {town}. " + _general_facts(rng)
    names = [p.name for p in people]
    who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    lines = [f"The town of {town}.", f"{who} {'lives' if len(names) == 1 else 'live'} in {town}."]
    for p in rng.sample(people, min(len(people), 3)):
        lines.append(f"{p.name} works as {an(p.job)} and has {an(p.pet)} named {p.pet_name}.")
    lines.append(f"On a {rng.choice(['sunny', 'rainy', 'quiet', 'busy'])} day, people in {town} go to "
                 f"{rng.choice(PLACES)}.")
    return " ".join(lines)


def _spelling(rng: random.Random) -> str:
    out = [rng.choice(["Spelling practice.", "Let us spell some words.", "How to spell words."])]
    for w in rng.sample(SPELL_WORDS, rng.randint(4, 8)):
        out.append(rng.choice([f"The word {w} is spelled {'-'.join(w)}.",
                               f"{w.capitalize()} has {len(w)} letters: {'-'.join(w)}."]))
    return " ".join(out)


def _activity(rng: random.Random, p: Person, friend: str = "") -> str:
    return rng.choice(W.ACTIVITIES).format(
        topic=rng.choice(W.TOPICS), plant=rng.choice(W.PLANTS), structure=rng.choice(W.STRUCTURES),
        food=rng.choice(W.FOODS), friend=friend or p.friend, collectible=rng.choice(W.COLLECTIBLES),
        clothing=rng.choice(W.CLOTHING), instrument=rng.choice(W.INSTRUMENTS))


def _day(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    times = sorted(rng.sample(range(4), rng.randint(2, 4)))
    when = ["In the morning", "At noon", "In the afternoon", "In the evening"]
    day = rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"])
    lines = [f"{day} was a {rng.choice(W.WEATHER)} day for {p.name}."]
    for t in times:
        lines.append(f"{when[t]}, {p.name} {_activity(rng, p)}.")
    meal = rng.choice(W.MEALS)
    lines.append(f"For {meal}, {p.name} had {rng.choice(W.FOODS)} and a cup of {rng.choice(W.DRINKS)}.")
    emotion = rng.choice(W.EMOTIONS)
    lines.append(rng.choice([f"At the end of the day, {p.name} felt {emotion}.",
                             f"{p.name} went to bed feeling {emotion}.",
                             f"It had been a long day, and {p.name} was {emotion} but {rng.choice(W.EMOTIONS)}."]))
    return " ".join(lines)


def _jobs(rng: random.Random) -> str:
    out = []
    for job in rng.sample(JOBS, rng.randint(3, 6)):
        out.append(f"{An(job)} {W.JOB_DUTIES[job]}.")
        workers = [q.name for q in WORLD.values() if q.job == job]
        if workers and rng.random() < 0.6:
            out.append(f"{rng.choice(workers)} is {an(job)} in {WORLD[workers[0]].town}."
                       if len(workers) == 1 else f"{' and '.join(workers[:2])} both work as {job}s.")
    return " ".join(out)


def _places(rng: random.Random) -> str:
    out = []
    for place in rng.sample(list(W.PLACE_NOTES), rng.randint(3, 5)):
        adj = rng.choice(W.ADJ_THINGS)
        out.append(f"At {place}, {W.PLACE_NOTES[place]}. Today there is {an(adj + ' ' + rng.choice(W.STRUCTURES))} "
                   f"at {place}.")
    return " ".join(out)


def _describe(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    thing = rng.choice(W.STRUCTURES)
    other = rng.choice([n for n in NAMES if n not in (p.name, p.friend)])
    a1, a2 = rng.sample(W.ADJ_THINGS, 2)
    return " ".join([
        f"{p.name} is {an(rng.choice(W.ADJ_PEOPLE) + ' ' + p.job)} who lives in {p.town}.",
        f"One {rng.choice(W.WEATHER)} day, {p.name} found {an(a1 + ' ' + thing)}. It was {a2} and a little "
        f"{rng.choice(W.ADJ_THINGS)}.",
        f"{p.name} showed it to {p.friend}, who was {rng.choice(W.EMOTIONS)}.",
        f"Together they {_activity(rng, p, other)}, and then they {_activity(rng, p, other)}.",
        f"Later, {p.name} wore {an(rng.choice(W.CLOTHING))} and ate {rng.choice(W.FOODS)} for "
        f"{rng.choice(W.MEALS)}.",
    ])


def _wild(rng: random.Random) -> str:
    out = []
    for a in rng.sample(list(W.WILD_ANIMALS), rng.randint(3, 5)):
        home, food, fact = W.WILD_ANIMALS[a]
        art = "An" if a[0] in "aeiou" else "A"
        s = [f"{art} {a} lives in {home}.", f"{art} {a} eats {food}.", f"{art} {a} {fact}."]
        rng.shuffle(s)
        out.append(" ".join(s[: rng.randint(2, 3)]))
    return " ".join(out)


def _home(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    r1, r2 = rng.sample(W.ROOMS, 2)
    lines = [f"{p.name}'s house in {p.town} has {an(r1)} and {an(r2)}."]
    for _ in range(rng.randint(3, 5)):
        item, room = rng.choice(W.HOUSEHOLD), rng.choice(W.ROOMS)
        lines.append(rng.choice([
            f"In the {room} there is {an(rng.choice(W.ADJ_THINGS) + ' ' + item)}.",
            f"{rng.choice(W.TIMES).capitalize()}, {p.name} {rng.choice(W.CHORE_VERBS)} the {item} in the {room}.",
            f"{p.pet_name} the {p.pet} likes to sleep next to the {item}."]))
    return " ".join(lines)


def _school(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    lines = [f"{p.name} goes to the school in {p.town}."]
    for subj in rng.sample(list(W.SUBJECTS), rng.randint(2, 4)):
        lines.append(rng.choice([f"In {subj}, the class learns about {W.SUBJECTS[subj]}.",
                                 f"{p.name} likes {subj} because it is about {W.SUBJECTS[subj]}."]))
    lines.append(f"After school, {p.name} {_activity(rng, p)}.")
    return " ".join(lines)


def _trip(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    dest = rng.choice([t for t in TOWNS if t != p.town])
    how = rng.choice(W.TRANSPORT)
    lines = [f"One {rng.choice(W.WEATHER)} day, {p.name} travelled from {p.town} to {dest} by {how}."]
    for sight in rng.sample(W.SIGHTS, rng.randint(2, 3)):
        lines.append(f"On the way, {p.name} saw {sight}.")
    lines.append(f"In {dest}, {p.name} {_activity(rng, p)}, and then went home by {rng.choice(W.TRANSPORT)}.")
    return " ".join(lines)


_DOC_KINDS = ((_story, 0.13), (_person_facts, 0.08), (_animal_facts, 0.04), (_number_drill, 0.07),
              (_word_problems, 0.13), (_dialogue, 0.07), (_general_facts, 0.03), (_comparisons, 0.04),
              (_town, 0.02), (_spelling, 0.03), (_day, 0.08), (_jobs, 0.03), (_places, 0.02), (_describe, 0.07),
              (_wild, 0.04), (_home, 0.04), (_school, 0.04), (_trip, 0.04))


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
