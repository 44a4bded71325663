"""Everyday-English document kinds of the synthetic corpus (days, jobs, places, homes, trips,
word knowledge...), built from the word banks in synthetic_words.py and the invented world.
"""

from __future__ import annotations

import random

from picochat.data import synthetic_words as W
from picochat.data.synthetic_world import ANIMALS, COLOURS, JOBS, NAMES, OBJECTS, PLACES, TOWNS, WORLD, An, Person, an

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
SPELL_WORDS = sorted({*ANIMALS, *COLOURS, *(o.rstrip("s") for o in OBJECTS), *W.EXTRA_NOUNS, *W.HOUSEHOLD,
                      *W.INSTRUMENTS, *W.EMOTIONS, *(w for pair in W.OPPOSITES for w in pair), *W.NATURE_NOUNS,
                      *W.MORE_ADJ_THINGS, *W.MORE_ADJ_PEOPLE} - {"brand-new"})
ADJ_THINGS = W.ADJ_THINGS + W.MORE_ADJ_THINGS
ADJ_PEOPLE = W.ADJ_PEOPLE + W.MORE_ADJ_PEOPLE


def general_facts(rng: random.Random) -> str:
    return " ".join(rng.sample(GENERAL_FACTS, rng.randint(4, 8)))


def comparisons(rng: random.Random) -> str:
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


def town(rng: random.Random) -> str:
    town = rng.choice(TOWNS)
    people = [p for p in WORLD.values() if p.town == town]
    if not people:
        return f"Nobody we know lives in {town}. " + general_facts(rng)
    names = [p.name for p in people]
    who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    lines = [f"The town of {town}.", f"{who} {'lives' if len(names) == 1 else 'live'} in {town}."]
    for p in rng.sample(people, min(len(people), 3)):
        lines.append(f"{p.name} works as {an(p.job)} and has {an(p.pet)} named {p.pet_name}.")
    lines.append(f"On a {rng.choice(['sunny', 'rainy', 'quiet', 'busy'])} day, people in {town} go to "
                 f"{rng.choice(PLACES)}.")
    return " ".join(lines)


def spelling(rng: random.Random) -> str:
    out = [rng.choice(["Spelling practice.", "Let us spell some words.", "How to spell words."])]
    for w in rng.sample(SPELL_WORDS, rng.randint(4, 8)):
        out.append(rng.choice([f"The word {w} is spelled {'-'.join(w)}.",
                               f"{w.capitalize()} has {len(w)} letters: {'-'.join(w)}."]))
    return " ".join(out)


def activity(rng: random.Random, p: Person, friend: str = "") -> str:
    return rng.choice(W.ACTIVITIES).format(
        topic=rng.choice(W.TOPICS), plant=rng.choice(W.PLANTS), structure=rng.choice(W.STRUCTURES),
        food=rng.choice(W.FOODS), friend=friend or p.friend, collectible=rng.choice(W.COLLECTIBLES),
        clothing=rng.choice(W.CLOTHING), instrument=rng.choice(W.INSTRUMENTS))


def day(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    times = sorted(rng.sample(range(4), rng.randint(2, 4)))
    when = ["In the morning", "At noon", "In the afternoon", "In the evening"]
    day = rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"])
    lines = [f"{day} was a {rng.choice(W.WEATHER)} day for {p.name}."]
    for t in times:
        lines.append(f"{when[t]}, {p.name} {activity(rng, p)}.")
    meal = rng.choice(W.MEALS)
    lines.append(f"For {meal}, {p.name} had {rng.choice(W.FOODS)} and a cup of {rng.choice(W.DRINKS)}.")
    emotion = rng.choice(W.EMOTIONS)
    lines.append(rng.choice([f"At the end of the day, {p.name} felt {emotion}.",
                             f"{p.name} went to bed feeling {emotion}.",
                             f"It had been a long day, and {p.name} was {emotion} but {rng.choice(W.EMOTIONS)}."]))
    return " ".join(lines)


def jobs(rng: random.Random) -> str:
    out = []
    for job in rng.sample(JOBS, rng.randint(3, 6)):
        out.append(f"{An(job)} {W.JOB_DUTIES[job]}.")
        workers = [q.name for q in WORLD.values() if q.job == job]
        if workers and rng.random() < 0.6:
            out.append(f"{rng.choice(workers)} is {an(job)} in {WORLD[workers[0]].town}."
                       if len(workers) == 1 else f"{' and '.join(workers[:2])} both work as {job}s.")
    return " ".join(out)


def places(rng: random.Random) -> str:
    out = []
    for place in rng.sample(list(W.PLACE_NOTES), rng.randint(3, 5)):
        adj = rng.choice(ADJ_THINGS)
        out.append(f"At {place}, {W.PLACE_NOTES[place]}. Today there is {an(adj + ' ' + rng.choice(W.STRUCTURES))} "
                   f"at {place}.")
    return " ".join(out)


def describe(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    thing = rng.choice(W.STRUCTURES)
    other = rng.choice([n for n in NAMES if n not in (p.name, p.friend)])
    a1, a2 = rng.sample(ADJ_THINGS, 2)
    return " ".join([
        f"{p.name} is {an(rng.choice(ADJ_PEOPLE) + ' ' + p.job)} who lives in {p.town}.",
        f"One {rng.choice(W.WEATHER)} day, {p.name} found {an(a1 + ' ' + thing)}. It was {a2} and a little "
        f"{rng.choice(ADJ_THINGS)}.",
        f"{p.name} showed it to {p.friend}, who was {rng.choice(W.EMOTIONS)}.",
        f"Together they {activity(rng, p, other)}, and then they {activity(rng, p, other)}.",
        f"Later, {p.name} wore {an(rng.choice(W.CLOTHING))} and ate {rng.choice(W.FOODS)} for "
        f"{rng.choice(W.MEALS)}.",
    ])


def wild(rng: random.Random) -> str:
    out = []
    for a in rng.sample(list(W.WILD_ANIMALS), rng.randint(3, 5)):
        home, food, fact = W.WILD_ANIMALS[a]
        art = "An" if a[0] in "aeiou" else "A"
        s = [f"{art} {a} lives in {home}.", f"{art} {a} eats {food}.", f"{art} {a} {fact}."]
        rng.shuffle(s)
        out.append(" ".join(s[: rng.randint(2, 3)]))
    return " ".join(out)


def home(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    r1, r2 = rng.sample(W.ROOMS, 2)
    lines = [f"{p.name}'s house in {p.town} has {an(r1)} and {an(r2)}."]
    for _ in range(rng.randint(3, 5)):
        item, room = rng.choice(W.HOUSEHOLD), rng.choice(W.ROOMS)
        lines.append(rng.choice([
            f"In the {room} there is {an(rng.choice(ADJ_THINGS) + ' ' + item)}.",
            f"{rng.choice(W.TIMES).capitalize()}, {p.name} {rng.choice(W.CHORE_VERBS)} the {item} in the {room}.",
            f"{p.pet_name} the {p.pet} likes to sleep next to the {item}."]))
    return " ".join(lines)


def school(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    lines = [f"{p.name} goes to the school in {p.town}."]
    for subj in rng.sample(list(W.SUBJECTS), rng.randint(2, 4)):
        lines.append(rng.choice([f"In {subj}, the class learns about {W.SUBJECTS[subj]}.",
                                 f"{p.name} likes {subj} because it is about {W.SUBJECTS[subj]}."]))
    lines.append(f"After school, {p.name} {activity(rng, p)}.")
    return " ".join(lines)


def trip(rng: random.Random) -> str:
    p = WORLD[rng.choice(NAMES)]
    dest = rng.choice([t for t in TOWNS if t != p.town])
    how = rng.choice(W.TRANSPORT)
    lines = [f"One {rng.choice(W.WEATHER)} day, {p.name} travelled from {p.town} to {dest} by {how}."]
    for sight in rng.sample(W.SIGHTS, rng.randint(2, 3)):
        lines.append(f"On the way, {p.name} saw {sight}.")
    lines.append(f"In {dest}, {p.name} {activity(rng, p)}, and then went home by {rng.choice(W.TRANSPORT)}.")
    return " ".join(lines)


def words(rng: random.Random) -> str:
    """Word knowledge: opposites, past tenses and plurals, stated plainly."""
    out = [rng.choice(["Words.", "Learning words.", "Some facts about words."])]
    for _ in range(rng.randint(5, 9)):
        kind = rng.random()
        if kind < 0.4:
            a, b = rng.choice(W.OPPOSITES)
            out.append(rng.choice([f"The opposite of {a} is {b}.", f"{a.capitalize()} is the opposite of {b}."]))
        elif kind < 0.75:
            now, past = rng.choice(W.PAST_TENSE)
            out.append(rng.choice([f"Today I {now}; yesterday I {past}.", f"The past tense of {now} is {past}."]))
        elif kind < 0.9:
            one, many = rng.choice(W.IRREGULAR_PLURALS)
            out.append(f"One {one}, two {many}." if one != many else f"One {one}, two {many}: the word stays the same.")
        else:
            noun = rng.choice(W.EXTRA_NOUNS + W.NATURE_NOUNS)
            out.append(rng.choice([f"The word {noun} has {len(noun)} letters.",
                                   f"{noun.capitalize()} starts with the letter {noun[0]}."]))
    return " ".join(out)
