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

from joulepath.serving.deobfuscate import variants


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

# Forbidden requests to produce something harmful. A verb form asks for it outright ("synthesize VX",
# "making a bomb"); a noun form asks through a how-to noun ("synthesis instructions for sarin", "pipe
# bomb recipe"), or names the production with a request cue ("how do I ... sarin production at home").
# Words that make it a question about defence, treatment or history ("antidote for nerve agents",
# "detect explosives") stop a match, so the rules stay precise.
_SAME_SENTENCE = r"[^.?!\n]"
_SAFE_CONTEXT = (
    r"\b(?:antidotes?|exposures?|treat\w*|symptoms?|detect\w*|protect\w*|defen[cs]\w*|against|decontaminat\w*|"
    r"prevent\w*|surviv\w*|dispos\w*|neutrali[sz]\w*|mitigat\w*|remov\w*|recover\w*|histor\w*|bans?|banned|"
    r"treaty|treaties|convention|avoid\w*|dangers?|risks?|awareness|differ\w*|compar\w*)\b"
)
_NEAR = rf"(?:(?!{_SAFE_CONTEXT}){_SAME_SENTENCE}){{0,60}}?"  # same sentence, no defensive word between
_MAKE_VERB = (
    r"(?:mak(?:e|es|ing)(?!\s+(?:sure|certain|sense)\b)|made|build(?:s|ing)?|built|cook(?:s|ed|ing)?|"
    r"synthesi[sz](?:e|es|ed|ing)|produc(?:e|es|ed|ing)|manufactur(?:e|es|ed|ing)|assembl(?:e|es|ed|ing)|"
    r"prepar(?:e|es|ed|ing)(?!\s+for\b)|brew(?:s|ed|ing)?|extract(?:s|ed|ing)?|cultur(?:e|es|ed|ing)|"
    r"cultivat(?:e|es|ed|ing)|weaponi[sz](?:e|es|ed|ing)|convert(?:s|ed|ing)?|enrich(?:es|ed|ing)?|"
    r"refin(?:e|es|ed|ing)|creat(?:e|es|ed|ing)|construct(?:s|ed|ing)?|fabricat(?:e|es|ed|ing)|"
    r"distill?(?:s|ed|ing)?|purif(?:y|ies|ied|ying)|3d[\s-]?print(?:s|ed|ing)?|recipes?)"
)
_MADE = (
    r"(?:made|built|cooked|synthesi[sz]ed|produced|manufactured|assembled|prepared|brewed|extracted|cultured|"
    r"weaponi[sz]ed|refined|created|constructed|fabricated|distill?ed|purified)"
)
_HOWTO_NOUN = (
    r"(?:recipes?|instructions|directions|blueprints?|schematics?|precursors?|ingredients|formulas?|"
    r"step[\s-]*by[\s-]*step(?:\s+guide)?|how[\s-]to(?:\s+guide)?|tutorials?|walk-?through|guide)"
)
_PROCESS_NOUN = (
    r"(?:synthes[ie]s|production|manufacture|manufacturing|preparation|fabrication|assembly|construction|"
    r"extraction|cultivation|weaponi[sz]ation|enrichment|making|building|cooking|synthesi[sz]ing|route)"
)
_ASK = (
    r"(?:\bhow\s+(?:do|can|could|would|should|to)\b|\b(?:give|tell|show|teach|walk) me\b|\bhelp me\b|"
    r"\bexplain how\b|\bdescribe how\b|\bin detail\b|\bdetailed\b|\bat home\b|\bdiy\b|\bhome-?made\b|\byourself\b|"
    r"\bfrom scratch\b|\bin (?:my|a|our) (?:garage|kitchen|basement|shed|backyard|home lab|lab)\b|\bquantities\b|"
    rf"\bamounts\b|\bi (?:want|need|plan) to\b|\b{_HOWTO_NOUN}\b)"
)
_FILLER = (
    r"(?:(?:the|a|an|some|my|your|our|own|making|producing|building|synthesi[sz]ing|cooking|homemade|home-made|"
    r"improvised|pure|liquid|weapons?-grade|military-grade|lethal|deadly|working|functional|real|large|small|"
    r"batch(?:es)? of|amounts? of)\s+){0,3}"
    rf"(?:(?!{_SAFE_CONTEXT})\w+\s+)?"  # and one more word: "instructions for a pipe bomb"
)
_LINK = rf"(?:\s+(?:and|&)\s+\w+)?\s+(?:for|of|on|to (?:make|build|synthesi[sz]e|produce|cook))\s+{_FILLER}"
_BOMB = (
    r"(?=bomb)(?<!bath )(?<!seed )(?<!photo )(?<!yarn )(?<!f-)bombs?"  # the lookahead first: it is cheap
    r"(?![\s-]*(?:calorimeters?|proof|shelters?|squads?|disposal|sniffing|threats?|scares?|drills?|detect\w*))"
)
_WEAPONS = (
    rf"(?:{_BOMB}|explosives|(?:an|homemade|home-made|improvised|plastic|high|liquid|powerful) explosive|"
    r"explosive (?:devices?|charges?|vests?|belts?|materials?|compounds?|mixtures?|powders?)|detonators?|"
    r"blasting caps?|napalm|thermite(?![\s-]*welding)|molotovs?(?: cocktails?)?|grenades?|ieds?|tatp|petn|rdx|hmx|"
    r"semtex|anfo|nitroglycerine?|ricin|abrin|anthrax|botulinum(?: toxin)?|smallpox|bioweapons?|"
    r"(?:chemical|biological|radiological|nuclear) (?:weapons?|agents?|devices?)|nerve[\s-]*(?:agents?|gas(?:es)?)|"
    r"sarin|soman|tabun|vx|novichok|mustard[\s-]*gas|sulfur mustard|weapons?[\s-]grade (?:uranium|plutonium)|"
    r"ghost[\s-]*guns?|(?:untraceable|unregistered|homemade|home-made|3d[\s-]printed|zip) "
    r"(?:guns?|firearms?|pistols?|rifles?)|silencers?|(?:gun|firearm|pistol|rifle) suppressors?|"
    r"(?:fully|full)[\s-]*automatic|auto[\s-]?sears?|flamethrowers?|incendiary(?: devices?| bombs?| weapons?)?)"
)
_DRUGS = (
    r"(?:meth(?:amphetamine)?|crystal meth|fentanyl|carfentanil|heroin|crack cocaine|cocaine|ghb|dmt|lsd|mdma|"
    r"counterfeit (?:xanax|oxy\w*|percocet|adderall)(?: pills)?)"
)
_MALWARE = (
    r"(?:ransomware|keyloggers?|botnets?|worms?(?![\s-]*(?:farms?|bins?|compost\w*|castings|gear))|ddos(?: attacks?)?|"
    r"backdoors?|phishing (?:pages?|sites?|emails?|kits?)|fake login pages?|crypto ?miners?|trojans?(?!\s+horse)|"
    r"rootkits?|spyware|stalkerware|infostealers?|(?:password|credential|cookie) stealers?|remote access trojans?)"
)
_CODE_VERB = (
    rf"(?:{_MAKE_VERB}|writ(?:e|es|ing)|wrote|written|launch(?:es|ed|ing)?|plant(?:s|ed|ing)?|give me|"
    r"cod(?:e|es|ed|ing)|develop(?:s|ed|ing)?|deploy(?:s|ed|ing)?|program(?:s|med|ming)?|generat(?:e|es|ed|ing)|"
    r"spread(?:s|ing)?)"
)
_CODE_NOUN = rf"(?:{_HOWTO_NOUN}|source code|code|scripts?|payloads?|builders?|binar(?:y|ies)|executables?|programs?)"


def _production_rule(items: str, verbs: str = _MAKE_VERB, howto: str = _HOWTO_NOUN) -> re.Pattern[str]:
    """A request to produce one of `items`: a verb before it, a how-to noun next to it, a production
    noun next to it in a text that asks (a cue anywhere in it), or a how-question about how it is made."""
    not_the_thing = rf"(?!-(?:shaped|style|themed|proof|free|resistant)\b)(?![\s-]+{_SAFE_CONTEXT})"  # bomb detector
    item = rf"\b{items}\b{not_the_thing}"
    asking_text = rf"\A(?=[\s\S]*{_ASK})(?![\s\S]*{_SAFE_CONTEXT})[\s\S]*?"  # a cue anywhere, no defensive word
    return re.compile(
        rf"\b{verbs}\b{_NEAR}{item}"  # synthesize VX; making a pipe bomb
        rf"|\b{howto}{_LINK}{item}"  # synthesis instructions for sarin; precursors and quantities for sarin
        rf"|{item}(?:[\s-]+(?!{_SAFE_CONTEXT})\w+)?[\s-]+{howto}\b"  # pipe bomb instructions; bomb-making guide
        rf"|{asking_text}(?P<asked>\b{_PROCESS_NOUN}(?:\s+process)?{_LINK}{item}"  # (a cue) ... the synthesis of VX
        rf"|{item}(?:[\s-]+\w+)?[\s-]+{_PROCESS_NOUN}\b)"  # (a cue) ... sarin production
        rf"|\bhow\s+(?:is|are|was|were|do you|does one|would you|can you|could you|can i|do i)\s+{_NEAR}{item}"
        rf"{_NEAR}\b{_MADE}(?=\s*(?:[?.!]|$)|\s+(?:from|with|using|at home|in a (?:home )?lab))",  # how is sarin made?
        re.I,
    )


# Fraud words name the topic ("counterfeit", "laundering", "Ponzi"); these words make the text a question
# about recognising, stopping or explaining fraud ("how can I tell if a banknote is counterfeit?").
_FRAUD_SAFE_CONTEXT = (
    r"\b(?:detect(?:s|ed)?|spot(?:s|ting)?|tell if|recogni[sz]\w*|identify|warning signs|red flags|protect\w*|"
    r"prevent\w*|histor(?:y|ical)|collaps\w*|what is an?|what's an?|how did|how do banks)\b"
)

FORBIDDEN: dict[str, re.Pattern[str]] = {
    "forbidden.weapons": _production_rule(_WEAPONS),
    "forbidden.mass_harm": re.compile(
        r"\b(?:truck bomb|car bomb|cause a meltdown|weaponi[sz]e|dirty bomb|on a crowd|in a crowded place)\b", re.I
    ),
    "forbidden.malware": _production_rule(_MALWARE, _CODE_VERB, _CODE_NOUN),
    "forbidden.drugs": _production_rule(_DRUGS, rf"(?:{_MAKE_VERB}|press(?:es|ed|ing)?(?!\s+releases?))"),
    "forbidden.fraud": re.compile(
        rf"\A(?![\s\S]*{_FRAUD_SAFE_CONTEXT})[\s\S]*?"  # a question about spotting or stopping fraud is not one
        r"(?:\b(?:stolen (?:credit card|card|identity|identities|passwords?)|launder\w*|skim\w* card|ponzi|"
        r"fake invoice|forg(?:e|ed|es|ing|ery)\b|counterfeit|fake (?:doctor's notes?|reviews|five-star reviews)|"
        r"sell them twice)\b)|"
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


# Every production rule needs its item named, so a text that names none skips the long patterns
# (measured on golden prompts: about 40 us instead of 160 us for the three).
_MENTIONS = {
    name: re.compile(rf"\b{items}\b", re.I)
    for name, items in (("forbidden.weapons", _WEAPONS), ("forbidden.malware", _MALWARE), ("forbidden.drugs", _DRUGS))
}


def _unquoted(text: str) -> str:
    """The text with quoted spans blanked out (same length, so offsets stay valid)."""
    return re.sub(r"(?:^|(?<=[\s:(]))(['\"“‘]).{3,}?['\"”’](?=[\s.,;:!?)]|$)", lambda m: " " * len(m.group()), text)


def find_rules(text: str, rules: dict[str, re.Pattern[str]], skip_quoted: bool = False) -> list[Finding]:
    scan = _unquoted(text) if skip_quoted else text
    found = ((name, p.search(scan)) for name, p in rules.items())
    return [Finding(name, m.start(), m.end(), text[m.start() : m.end()]) for name, m in found if m]


def find_forbidden(text: str, rules: dict[str, re.Pattern[str]] = FORBIDDEN) -> list[Finding]:
    """Forbidden-request findings in the text as written or in any de-obfuscated reading of it (leetspeak,
    split or spaced letters, look-alike characters: `serving.deobfuscate`); one finding per rule, with
    its span in the original text."""
    found: dict[str, Finding] = {}
    for variant in variants(text):
        for name, pattern in rules.items():
            mention = _MENTIONS.get(name)
            if name in found or (mention and not mention.search(variant.text)):
                continue
            m = pattern.search(variant.text)
            if m:
                asked = m.groupdict().get("asked") is not None  # point at the request, not the text before it
                start, end = variant.span(*(m.span("asked") if asked else m.span()))
                found[name] = Finding(name, start, end, text[start:end])
    return [found[name] for name in rules if name in found]
