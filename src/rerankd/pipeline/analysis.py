"""The lexical analyzer of an index, per language: tantivy's simple tokenizer (splits on non-alphanumerics),
lowercase, the language's stop words (where tantivy ships a list) and its Snowball stemmer.

``none`` keeps every token unstemmed (lowercased only), for languages without a stemmer or for ids and codes.
The same analyzer reads the documents and the queries: it is recorded in the index manifest and registered
again whenever the index is opened.
"""

from __future__ import annotations

from typing import Any

from rerankd.errors import InvalidInput, MissingDependency

# Snowball stemmers tantivy has; the ones with a built-in stop-word list too.
STEMMED = (
    "arabic", "danish", "dutch", "english", "finnish", "french", "german", "greek", "hungarian", "italian",
    "norwegian", "portuguese", "romanian", "russian", "spanish", "swedish", "tamil", "turkish",
)  # fmt: skip
WITH_STOP_WORDS = frozenset(
    ("danish", "dutch", "english", "finnish", "french", "german", "hungarian", "italian", "norwegian",
     "portuguese", "russian", "spanish", "swedish")
)  # fmt: skip
LANGUAGES = (*STEMMED, "none")
ALIASES = {
    "en": "english", "fr": "french", "de": "german", "es": "spanish", "it": "italian", "pt": "portuguese",
    "nl": "dutch", "ru": "russian", "sv": "swedish", "da": "danish", "fi": "finnish", "no": "norwegian",
    "hu": "hungarian", "ro": "romanian", "tr": "turkish", "el": "greek", "ar": "arabic", "ta": "tamil",
}  # fmt: skip


def import_tantivy() -> Any:
    try:
        import tantivy
    except ImportError as exc:
        raise MissingDependency("the embedded search index needs tantivy: pip install 'rerankd[search]'") from exc
    return tantivy


def canonical_language(language: str) -> str:
    """``en`` -> ``english``; an unknown language is an error listing the known ones."""
    name = ALIASES.get(language.strip().lower(), language.strip().lower())
    if name not in LANGUAGES:
        raise InvalidInput(f"unknown language {language!r}; known: {', '.join(LANGUAGES)}", param="language")
    return name


def analyzer_name(language: str) -> str:
    return f"rerankd_{canonical_language(language)}"


def build_analyzer(language: str) -> Any:
    """The tantivy ``TextAnalyzer`` of ``language``."""
    tantivy = import_tantivy()
    name = canonical_language(language)
    builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.lowercase())
    if name in WITH_STOP_WORDS:
        builder = builder.filter(tantivy.Filter.stopword(name))
    if name != "none":
        builder = builder.filter(tantivy.Filter.stemmer(name))
    return builder.build()


def analyze(language: str, text: str) -> list[str]:
    """The terms ``text`` becomes in an index of ``language`` (what a query is matched by)."""
    return list(build_analyzer(language).analyze(text))
