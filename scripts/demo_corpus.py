"""Simple English-like text for the demo models: a small grammar of sentences and short stories.

Stories mention their characters again and sometimes repeat an earlier sentence word for word, so the
text itself rewards looking back; ``scripts/train_demo_models.py`` adds repeated runs of random tokens.
Numbers written with digits (house numbers, years, prices) give the byte-level BPE enough to merge for a
vocabulary of a couple of thousand pieces.
"""

from __future__ import annotations

import random

NAMES = ["Alice", "Bob", "Carol", "Dave", "Emma", "Frank", "Grace", "Henry", "Ivy", "Jack", "Kate", "Leo",
         "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tina", "Victor", "Anna", "Ben", "Clara", "Daniel",
         "Ella", "Felix", "George", "Hannah", "Isaac", "Julia", "Karl", "Lucy", "Max", "Nina", "Oscar", "Peter",
         "Quinn", "Ruby", "Simon", "Tom", "Uma", "Vera", "Walter", "Xena", "Yuri", "Zoe", "Amir", "Bella",
         "Chen", "Diego", "Elena", "Farah", "Hugo", "Ines", "Jonas", "Kofi", "Lena", "Marco", "Nadia", "Omar"]
ANIMALS = ["cat", "dog", "bird", "fox", "horse", "cow", "rabbit", "mouse", "duck", "sheep", "goat", "owl",
           "frog", "bear", "wolf", "deer", "pig", "hen", "lion", "tiger", "monkey", "turtle", "snake", "bee",
           "donkey", "goose", "squirrel", "hedgehog", "parrot", "whale"]
PLACES = ["park", "garden", "house", "river", "forest", "school", "market", "kitchen", "farm", "beach",
          "library", "village", "city", "station", "bakery", "harbour", "museum", "hospital", "church",
          "castle", "lake", "mountain", "valley", "shop", "office", "bridge", "field", "island", "zoo", "hotel"]
OBJECTS = ["mat", "ball", "box", "book", "chair", "table", "hat", "cup", "apple", "bag", "letter", "key",
           "lamp", "clock", "pen", "coat", "shoe", "basket", "bottle", "candle", "map", "ring", "plate",
           "spoon", "blanket", "ladder", "kite", "drum", "bucket", "pillow", "umbrella", "window", "door"]
ADJECTIVES = ["big", "small", "red", "old", "happy", "quiet", "brown", "white", "little", "young", "green",
              "blue", "tall", "short", "sleepy", "clever", "funny", "heavy", "shiny", "dirty", "clean",
              "yellow", "black", "new", "strange", "gentle", "noisy", "brave"]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "grey", "pink"]
FOODS = ["bread", "soup", "cheese", "cake", "rice", "fish", "carrots", "honey", "milk", "tea", "pie",
         "beans", "eggs", "grapes", "pears"]
MOVES = ["went to", "walked to", "ran to", "came back to", "drove to", "looked around", "cycled to"]
RESTS = [("sat on", OBJECTS), ("slept in", PLACES), ("played in", PLACES), ("jumped over", OBJECTS),
         ("hid behind", OBJECTS), ("waited near", PLACES)]
FEELINGS = ["liked", "found", "lost", "wanted", "carried", "opened", "painted", "cleaned", "bought", "sold",
            "dropped", "fixed", "borrowed", "needed"]
SPEECH = ["said", "asked", "shouted", "whispered", "laughed"]


IRREGULAR_PLURALS = {"fox": "foxes", "sheep": "sheep", "mouse": "mice", "deer": "deer", "goose": "geese"}


def _plural(animal: str) -> str:
    return IRREGULAR_PLURALS.get(animal, animal + "s")


def _amount(rng: random.Random) -> str:
    return str(rng.choice([rng.randrange(2, 13), rng.randrange(13, 100), rng.randrange(100, 1000)]))


def _sentence(rng: random.Random, cast: list[str]) -> str:
    name, other = rng.sample(cast, 2)
    animal, place, thing = rng.choice(ANIMALS), rng.choice(PLACES), rng.choice(OBJECTS)
    verb, targets = rng.choice(RESTS)
    adjective, number = rng.choice(ADJECTIVES), rng.choice(NUMBERS[1:])
    templates = [
        lambda: f"The {animal} {verb} the {rng.choice(targets)}.",
        lambda: f"{name} {rng.choice(MOVES)} the {place}.",
        lambda: f"{name} saw a {adjective} {animal} in the {place}.",
        lambda: f"{name} has {number} {_plural(animal)}.",
        lambda: f"{name} gave the {thing} to {other}.",
        lambda: f"{name} {rng.choice(FEELINGS)} the {adjective} {thing}.",
        lambda: f"{other} and {name} went to the {place} with the {animal}.",
        lambda: f"The {adjective} {animal} {verb} the {rng.choice(targets)}.",
        lambda: f"There were {number} {_plural(animal)} on the {rng.choice(['farm', 'hill', 'road', 'island'])}.",
        lambda: f"{name} lives at {rng.randrange(1, 400)} {rng.choice(['Hill', 'River', 'Park', 'Mill'])} Road.",
        lambda: f"On {rng.choice(DAYS)}, {name} ate {rng.choice(FOODS)} with {other}.",
        lambda: f"In {rng.choice(MONTHS)} {rng.randrange(1890, 2030)}, {name} moved to the {place}.",
        lambda: f"The {thing} cost {_amount(rng)} coins at the {rng.choice(['market', 'shop', 'bakery'])}.",
        lambda: f"\"Where is the {thing}?\" {rng.choice(SPEECH)} {name}.",
        lambda: f"{name} painted the {thing} {rng.choice(COLOURS)}.",
        lambda: f"The train to the {place} leaves at {rng.randrange(1, 13)}:{rng.randrange(0, 60):02d}.",
        lambda: f"{name} counted {_amount(rng)} {_plural(animal)} near the {place}.",
    ]
    return rng.choice(templates)()


def _counting(rng: random.Random) -> str:
    if rng.random() < 0.5:
        start = rng.randrange(0, 7)
        return ", ".join(NUMBERS[start : start + rng.randrange(3, 6)]) + "."
    start, step = rng.randrange(0, 200), rng.choice([1, 2, 5, 10])
    return ", ".join(str(start + step * i) for i in range(rng.randrange(3, 7))) + "."


def story(rng: random.Random) -> str:
    """A few sentences about a small cast; some stories repeat an earlier sentence later on."""
    cast = rng.sample(NAMES, 3)
    sentences = [_counting(rng) if rng.random() < 0.1 else _sentence(rng, cast) for _ in range(rng.randrange(3, 8))]
    if rng.random() < 0.4 and len(sentences) >= 2:
        repeated = " ".join(sentences[: rng.randrange(1, len(sentences))])
        sentences.append(f"Then, once more: {repeated}" if rng.random() < 0.5 else repeated)
    return " ".join(sentences)


def corpus(n_stories: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [story(rng) for _ in range(n_stories)]


if __name__ == "__main__":
    for text in corpus(5, seed=0):
        print(text, end="\n\n")
