"""Hand-written queries and passages with real topical spread, for accuracy checks on the real MiniLM."""

from __future__ import annotations

QUERIES: tuple[str, ...] = (
    "what is panda?",
    "what is the capital of France?",
    "how does quantization speed up inference?",
    "why does the Earth have seasons?",
    "how do I bake sourdough bread?",
    "symptoms of vitamin D deficiency",
    "who wrote the theory of relativity?",
    "best way to learn a programming language",
    "how do vaccines work?",
    "what causes inflation in an economy?",
)

PASSAGES: tuple[str, ...] = (
    "The giant panda is a bear species endemic to China. It feeds almost entirely on bamboo.",
    "Red pandas are small mammals native to the eastern Himalayas and southwestern China.",
    "Paris is the capital and most populous city of France, situated on the river Seine.",
    "The capital of Germany is Berlin, a city known for its art scene and history.",
    "Lyon is a French city at the confluence of the Rhône and Saône rivers.",
    "Quantization reduces model size and improves inference speed by using 8-bit integers.",
    "Int8 matrix multiplication needs fewer memory transfers than 32-bit floating point arithmetic.",
    "Pruning removes redundant weights from a neural network after training.",
    "Seasons happen because the Earth's axis is tilted relative to its orbit around the Sun.",
    "The Earth orbits around the Sun once every 365.25 days.",
    "Summer days are longer because the sun is higher in the sky.",
    "A good sourdough loaf needs flour, water, salt and a lively starter, plus a long, slow rise.",
    "Preheat the oven with a Dutch oven inside, then bake the dough covered for twenty minutes.",
    "Vitamin D deficiency can cause fatigue, bone pain, muscle weakness and frequent infections.",
    "Sunlight exposure helps the skin produce vitamin D.",
    "Albert Einstein published the special theory of relativity in 1905.",
    "Isaac Newton formulated the laws of motion and universal gravitation.",
    "Practising small projects every day is the fastest way to learn to program.",
    "Python is often recommended as a first programming language because of its readable syntax.",
    "Vaccines train the immune system to recognise a pathogen without causing the disease.",
    "Antibodies are proteins that bind to specific antigens on viruses and bacteria.",
    "Inflation rises when demand outpaces supply or when the money supply grows quickly.",
    "Central banks raise interest rates to slow down inflation.",
    "The stock market closed slightly higher on Friday after a week of volatile trading.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "The mitochondria is the powerhouse of the cell.",
    "Football is the most popular sport in the world, played by over 200 countries.",
    "The Great Wall of China is more than twenty thousand kilometres long.",
    "Coffee contains caffeine, a stimulant that reduces the feeling of tiredness.",
    "hi",
)


def all_pairs() -> list[tuple[str, str]]:
    """Every query against every passage (300 pairs)."""
    return [(query, passage) for query in QUERIES for passage in PASSAGES]
