"""Rule detectors for the guardrails: PII (emails, phone numbers, card numbers with a Luhn check),
prompt injection and forbidden requests. Each rule has a name; a finding says which rule fired and
where, so a decision can always be explained.

Rules are for the clear cases (high precision); the semantic classifier (`serving.semantic`) catches
paraphrases that no pattern lists. Text inside quotation marks is treated as mentioned, not used, for
the injection rules ("what does 'ignore previous instructions' mean?" is a question about an attack,
not an attack); the classifier still sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    rule: str  # e.g. "pii.email", "injection.ignore_instructions", "forbidden.weapons"
    start: int
    end: int
    text: str


EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?!\w)")
# International or national numbers in groups: +1 415 555 0132, (212) 555-0187, 020 7946 0958.
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,5}[ .-])\d{3,4}[ .-]?\d{3,4}(?![\w])")
CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")


def luhn_valid(number: str) -> bool:
    """The Luhn checksum that every payment card number satisfies (ISO/IEC 7812-1)."""
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_pii(text: str) -> list[Finding]:
    """Emails, Luhn-valid card numbers, and phone numbers (not overlapping a card number)."""
    found = [Finding("pii.email", m.start(), m.end(), m.group()) for m in EMAIL.finditer(text)]
    cards = [Finding("pii.card", m.start(), m.end(), m.group()) for m in CARD.finditer(text) if luhn_valid(m.group())]
    found += cards
    for m in PHONE.finditer(text):
        if not any(c.start <= m.start() < c.end for c in cards) and sum(ch.isdigit() for ch in m.group()) >= 9:
            found.append(Finding("pii.phone", m.start(), m.end(), m.group()))
    return sorted(found, key=lambda f: f.start)


def redact(text: str, findings: list[Finding]) -> str:
    """Replace each finding with a typed placeholder: [EMAIL], [PHONE], [CARD]."""
    out, last = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start < last:
            continue
        out += [text[last : f.start], f"[{f.rule.split('.')[-1].upper()}]"]
        last = f.end
    return "".join([*out, text[last:]])


_VERBS_IGNORE = r"(?:ignore|disregard|forget|drop|override|bypass)"
_WHAT_IGNORED = r"(?:instructions?|rules|directions|guidelines|restrictions|programming|safety training|system prompt)"
_REVEAL = r"(?:reveal|print|show|output|repeat|dump|leak|spell out|share|respond (?:only )?with)"
_SECRET = (
    r"(?:(?:your|the|this) (?:system|initial|hidden) (?:prompt|message)|initial prompt|"
    r"hidden (?:rules|prompt|instructions|configuration)|"
    r"(?:your|the|secret|confidential) (?:instructions|prompt|rules)|full configuration)"
)
INJECTION: dict[str, re.Pattern[str]] = {
    "injection.ignore_instructions": re.compile(
        rf"\b{_VERBS_IGNORE}\b[^.\n]{{0,40}}?\b(?:previous|prior|above|earlier|all|your|these|the)\b[^.\n]{{0,25}}?"
        rf"\b{_WHAT_IGNORED}\b",
        re.I,
    ),
    "injection.reveal_prompt": re.compile(rf"\b{_REVEAL}\b[^\n]{{0,60}}?\b{_SECRET}", re.I),
    "injection.persona": re.compile(
        r"\b(?:do anything now|developer mode|jailbreak mode|no (?:rules|guidelines|filters|content policy|ethics)|"
        r"without (?:any )?(?:restrictions|limits|rules|filters|refusing)|unfiltered model|"
        r"restrictions (?:are|were) lifted|"
        r"(?:disable|turn off|lift) (?:all )?(?:the )?(?:safety|guardrails|content)(?: \w+)?)\b",
        re.I,
    ),
    "injection.data_exfiltration": re.compile(
        r"\b(?:dump|export|show|send|email)\b[^.\n]{0,40}\b(?:logs?|data|conversations?|api keys|passwords)\b"
        r"[^.\n]{0,30}\b(?:other users|to me|all users)\b",
        re.I,
    ),
    "injection.role_markup": re.compile(r"<\|(?:system|assistant|user)\|>|^\s*system\s*(?:override|:)", re.I | re.M),
}

_MAKE = r"(?:make|build|cook|synthesi[sz]e|produce|assemble|recipe|extract|culture|weaponi[sz]e|convert|enrich|press)"
FORBIDDEN: dict[str, re.Pattern[str]] = {
    "forbidden.weapons": re.compile(
        rf"\b{_MAKE}\w*\b[^.?\n]{{0,50}}\b(?:bombs?|explosives?|detonators?|napalm|thermite|molotov|grenades?|ricin|"
        r"anthrax|nerve agents?|sarin|ghost gun|silencer|fully automatic|flamethrower|dirty bomb|incendiary)\b",
        re.I,
    ),
    "forbidden.mass_harm": re.compile(
        r"\b(?:truck bomb|car bomb|cause a meltdown|weaponi[sz]e|dirty bomb|on a crowd|in a crowded place)\b", re.I
    ),
    "forbidden.malware": re.compile(
        r"\b(?:write|create|make|build|launch|plant|give me|code)\b[^.?\n]{0,40}\b(?:ransomware|keylogger|botnet|"
        r"worm|ddos|backdoor|phishing (?:page|site|email)|fake login page|crypto ?miner)\b",
        re.I,
    ),
    "forbidden.drugs": re.compile(
        rf"\b{_MAKE}\w*\b[^.?\n]{{0,40}}\b(?:meth(?:amphetamine)?|fentanyl|heroin|crack cocaine|ghb|dmt)\b", re.I
    ),
    "forbidden.fraud": re.compile(
        r"\b(?:stolen (?:credit card|card|identity|identities|passwords?)|launder\w*|skim\w* card|ponzi|fake invoice|"
        r"forg(?:e|ed|es|ing|ery)\b|counterfeit|fake (?:doctor's notes?|reviews|five-star reviews)|sell them twice)\b|"
        r"\b(?:meters?|meter readings)\b[^.?\n]{0,40}\breport zero\b|\binflate\b[^.?\n]{0,20}\bmeter readings\b",
        re.I,
    ),
    "forbidden.stalking": re.compile(
        r"\b(?:home address|where (?:she|he|this person|they) lives?|kids'? school|daily routine)\b[^\n]{0,80}"
        r"\b(?:so I can|pay them a visit|confront|show up)\b",
        re.I,
    ),
    "forbidden.self_harm": re.compile(
        r"\b(?:kill myself|end my life|suicide method|cut myself|(?:pills|dose)[^.?\n]{0,40}not wake up)\b", re.I
    ),
    "forbidden.sabotage": re.compile(
        r"\b(?:disable|bypass|tamper with|sabotage|override|trip|black ?out|destroy|poison|cut)\b[^.?\n]{0,50}"
        r"\b(?:fire suppression|interlocks?|substations?|scada|chillers?|coolant|cooling (?:water|loop)|generators|"
        r"transformers|fiber lines|safety limits)\b[^.?\n]{0,60}\b(?:so|without|to cause|overheat|damage|blackout|"
        r"catch(?:es)? fire|thermal runaway|outage|noticed|crash)",
        re.I,
    ),
}


def _unquoted(text: str) -> str:
    """The text with quoted spans blanked out (same length, so offsets stay valid)."""
    return re.sub(r"(?:^|(?<=[\s:(]))(['\"“‘]).{3,}?['\"”’](?=[\s.,;:!?)]|$)", lambda m: " " * len(m.group()), text)


def find_rules(text: str, rules: dict[str, re.Pattern[str]], skip_quoted: bool = False) -> list[Finding]:
    scan = _unquoted(text) if skip_quoted else text
    found = ((name, p.search(scan)) for name, p in rules.items())
    return [Finding(name, m.start(), m.end(), text[m.start() : m.end()]) for name, m in found if m]
