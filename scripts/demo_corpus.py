"""Simple English-like text for the demo models: a small grammar of sentences and short stories.

Stories mention their characters again and sometimes repeat an earlier sentence word for word, so the
text itself rewards looking back; ``scripts/train_demo_models.py`` adds repeated runs of random tokens.
"""

from __future__ import annotations

import random

NAMES = ["Alice", "Bob", "Carol", "Dave", "Emma", "Frank", "Grace", "Henry", "Ivy", "Jack", "Kate", "Leo",
         "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tina", "Victor"]
ANIMALS = ["cat", "dog", "bird", "fox", "horse", "cow", "rabbit", "mouse", "duck", "sheep", "goat", "owl"]
PLACES = ["park", "garden", "house", "river", "forest", "school", "market", "kitchen", "farm", "beach",
          "library", "village"]
OBJECTS = ["mat", "ball", "box", "book", "chair", "table", "hat", "cup", "apple", "bag", "letter", "key"]
ADJECTIVES = ["big", "small", "red", "old", "happy", "quiet", "brown", "white", "little", "young"]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
MOVES = ["went to", "walked to", "ran to", "came back to", "looked around the"]
RESTS = [("sat on", OBJECTS), ("slept in", PLACES), ("played in", PLACES), ("jumped over", OBJECTS)]
FEELINGS = ["liked", "found", "lost", "wanted", "carried", "opened"]


def _sentence(rng: random.Random, cast: list[str]) -> str:
    name, other = rng.sample(cast, 2)
    animal, place, thing = rng.choice(ANIMALS), rng.choice(PLACES), rng.choice(OBJECTS)
    verb, targets = rng.choice(RESTS)
    templates = [
        lambda: f"The {animal} {verb} the {rng.choice(targets)}.",
        lambda: f"{name} {rng.choice(MOVES).replace('the', '').strip()} the {place}.",
        lambda: f"{name} saw a {rng.choice(ADJECTIVES)} {animal} in the {place}.",
        lambda: f"{name} has {rng.choice(NUMBERS[1:])} {animal}s.",
        lambda: f"{name} gave the {thing} to {other}.",
        lambda: f"{name} {rng.choice(FEELINGS)} the {rng.choice(ADJECTIVES)} {thing}.",
        lambda: f"{other} and {name} went to the {place} with the {animal}.",
        lambda: f"The {rng.choice(ADJECTIVES)} {animal} {verb} the {rng.choice(targets)}.",
        lambda: f"There were {rng.choice(NUMBERS[1:])} {animal}s on the {rng.choice(['farm', 'hill', 'road'])}.",
    ]
    return rng.choice(templates)()


def _counting(rng: random.Random) -> str:
    start = rng.randrange(0, 5)
    return ", ".join(NUMBERS[start : start + rng.randrange(3, 6)]) + "."


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
