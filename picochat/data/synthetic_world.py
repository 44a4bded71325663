"""The invented world of the synthetic corpus: its people, towns, animals and things.

Fixed by `WORLD_SEED`, so that the same facts (who lives where, who owns which pet) recur in
thousands of documents and a tiny model can learn them. Also the a/an rule the templates use.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from picochat.data import synthetic_words as W

WORLD_SEED = 4242

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
