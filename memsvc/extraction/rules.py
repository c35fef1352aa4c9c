"""The default extractor: offline, deterministic and fast (regular expressions, no model).

What it does to a batch of turns, in order:
1. splits each turn into sentences and clauses, and drops questions, greetings and filler;
2. keeps first-person statements ("I went to ..."), subjectless ones ("Gonna continue my edu"),
   statements about a named person, and, in a two-person chat, statements about "you";
3. rewrites each kept statement into a self-contained third-person sentence with names and
   absolute dates ("I went there yesterday" by Caroline on 8 May 2023 -> "Caroline went there on
   7 May 2023"), and gives it a kind, a subject and a `valid_from`;
4. pulls entities (speakers, capitalised names, objects of "went to / joined / bought ...") and
   relations (subject, predicate, object) out of the rewritten sentences;
5. turns a bare "Yes, I did!" into a fact built from the question before it, citing both turns.

Everything is regex work on short strings, so a turn costs tens of microseconds; only sentences
with a date phrase pay for date parsing (see `dates.py`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from memsvc.extraction.base import (
    AGE,
    AMOUNT_KINDS,
    COUPLE,
    EVERY_REQUEST,
    KIN,
    PLAN_NOUNS,
    SECRET,
    EntityType,
    ExtractedEntity,
    ExtractedFact,
    ExtractedRelation,
    Extraction,
    FactKind,
    Turn,
    as_written,
    capitalised,
    instruction_sentence,
)
from memsvc.extraction.dates import (
    MONTH_NAMES,
    WEEKDAY_NAMES,
    ResolvedDate,
    has_trigger,
    main_date,
    resolve_dates,
    rewrite_relative,
    tense_of,
)

__all__ = ["RulesExtractor"]

# -- word lists -------------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_IRREGULAR_PAST = {
    "be": "was", "become": "became", "begin": "began", "break": "broke", "bring": "brought", "build": "built",
    "buy": "bought", "catch": "caught", "choose": "chose", "come": "came", "cut": "cut", "do": "did",
    "draw": "drew", "drink": "drank", "drive": "drove", "eat": "ate", "fall": "fell", "feed": "fed",
    "feel": "felt", "find": "found", "fly": "flew", "forget": "forgot", "get": "got", "give": "gave",
    "go": "went", "grow": "grew", "have": "had", "hear": "heard", "hide": "hid", "hit": "hit", "hold": "held",
    "hurt": "hurt", "keep": "kept", "know": "knew", "lead": "led", "leave": "left", "lose": "lost",
    "make": "made", "mean": "meant", "meet": "met", "pay": "paid", "put": "put", "quit": "quit",
    "read": "read", "ride": "rode", "run": "ran", "say": "said", "see": "saw", "sell": "sold", "send": "sent",
    "set": "set", "shoot": "shot",
    "sing": "sang", "sit": "sat", "sleep": "slept", "speak": "spoke", "spend": "spent", "stand": "stood",
    "swim": "swam", "take": "took", "teach": "taught", "tell": "told", "think": "thought", "throw": "threw",
    "understand": "understood", "wake": "woke", "wear": "wore", "win": "won", "write": "wrote",
}  # fmt: skip
_PAST_FORMS = frozenset(_IRREGULAR_PAST.values()) | {
    "was", "were", "been", "gone", "done", "seen", "taken", "given", "eaten", "written", "known", "used",
}  # fmt: skip
_MODALS = _words(
    "can cannot could will would should might must may shall can't couldn't won't wouldn't shouldn't didn't "
    "wasn't weren't haven't hadn't mustn't gotta used ought"
)
_ADVERBS = (
    r"really|also|just|still|always|never|usually|totally|actually|definitely|often|sometimes|even|kinda"
    r"|truly|absolutely|recently|finally|already|especially|currently|personally|genuinely|honestly"
    r"|seriously|literally|only|mostly|ever|now|then|too|so|all|both|both|sort of|kind of|\w+ly"
)
# Verbs that "you" is the subject of when it is not at the start of a clause ("I know you love it").
_COMMON_VERBS = _words(
    "love like have do go want need know think feel get make take enjoy look seem deserve mean play paint "
    "work live say see try keep find hate prefer miss remember run read write teach help use sound inspire "
    "care believe rock amaze"
)
# Sentence openers that are greetings, reactions or discourse markers, stripped before anything else.
_FILLER_WORDS = _words(
    "hey hi hello oh ooh wow woah whoa yeah yea yep yes yup no nope nah ok okay well so haha hahaha lol ah "
    "aw aww omg thanks cool great nice awesome sure totally definitely absolutely honestly actually btw "
    "anyway also plus and but hmm um uh true right exactly indeed man dude gosh ha hah yay woo phew ugh "
    "wowza yikes same sadly unfortunately"
)
_FILLER_PHRASES = (
    "by the way", "thank you", "same here", "me too", "of course", "for sure", "oh man", "just so you know",
    "just to let you know", "for the record", "for what it's worth", "to be honest", "fyi",
)  # fmt: skip
# Openers that are glue only when punctuation sets them off ("Wait, I moved to Rome" but "Wait
# until Friday"; "Give me a minute, I…" states what follows, not a request).
_SET_OFF_OPENER = re.compile(
    r"(?:wait|listen|look|guess what|hold on|you know what|give me a (?:minute|sec|second)|news flash"
    r"|(?:big |good |bad |great |sad |some )?news|(?:quick |small )?update)"
    r"\s*[,!:…]+\s*|(?:wait|listen|look|guess what|hold on)\s*[-–—]+\s*"
    # "turns out I'm not allergic after all": what was learnt, without the news of learning it.
    r"|(?:so\s+)?(?:it\s+)?turn(?:s|ed)\s+out(?:\s+that)?\s+(?=(?:i|i'm|we|we're|my|our)\b)",
    re.IGNORECASE,
)
_FIRST_WORD = re.compile(r"([A-Za-z']+)(?![-\w])(\s*[,!.…]+)?\s*")
# A label before what the speaker says of themselves ("Big news: I got a new job", "Update: we
# moved"): not part of the fact, and a fact that opens with it is not read as the change it states.
_LABEL = re.compile(
    r"[A-Za-z][A-Za-z']*(?:\s+[A-Za-z][A-Za-z']*){0,2}\s*:\s+(?=(?i:i|i'm|i've|we|we're|my|our)\b)"
)
_TRAILING_WORD = re.compile(r",\s*([A-Za-z]+)\s*[.!]*$")
# Chat shorthand that ends a statement and is no part of it: "I hate crowded places tbh".
_TRAILING_FILLER = re.compile(
    r"(?:,?\s+(?:just\s+)?(?:tbh|btw|fyi|imo|imho|lol|lmao|haha+|rn|atm|by the way|just so you know))+"
    r"\s*[.!]*$",
    re.IGNORECASE,
)
_SPLIT_WORDS = re.compile(r"\s(?:and|but|so)\s", re.IGNORECASE)
# Whole clauses that are conversational glue, not facts about anyone.
_FILLER = re.compile(
    r"^(?:i\s+(?:totally |completely |really |so |definitely |fully |truly |just |also )*"
    r"(?:agree|know|understand|see|guess|bet|hope so|think so|feel you|hear you|appreciate|feel the same"
    r"|can imagine|can relate|can't wait to (?:see|hear)|am here for you|'m here for you)\b"
    r"|i(?:'m| am)\s+(?:so |really |very |super |truly |just )*(?:glad|happy|proud|sorry|sure|thrilled"
    r"|stoked|excited|thankful|grateful|here)\s+(?:for you|of you|to hear|that you|you|about that|about it)\b"
    r"|i(?:'m| am)\s+(?:so |really |very |super )*"
    r"(?:glad|happy|proud|sorry|thrilled|excited|thankful|grateful)\s*(?:too|as well)?$"
    r"|i\s+(?:love|like)\s+(?:it|that|this|those|them)\s*(?:too)?$"
    r"|i'll (?:let you know|keep you posted|talk to you)|talk (?:to you )?soon|take care|see you"
    r"|good to (?:see|hear)|nice to (?:see|hear|meet)|sorry to hear|me too$|for (?:\w+ing|the|your|all)\b"
    # How one feels this moment, and what one is unsure of or wonders ("I'm so bored", "I'm good
    # thanks, bit tired", "I'm not sure what to do about my landlord"): nothing to remember.
    r"|i(?:'m| am)\s+(?:(?:so|really|very|a bit|bit|kinda|pretty|super|just|not)\s+)*"
    r"(?:good|fine|ok|okay|alright|tired|bored|sleepy|wrecked|exhausted|hungry|busy)\b"
    r"(?:\s*(?:thanks|thank you|,|tbh|lol|haha|too|today|now|bit|a bit|tired|and|\s))*$"
    r"|i(?:'m| am)\s+(?:(?:just|still|really|kinda)\s+)*(?:not sure|unsure|wondering|debating)\b"
    # A greeting for a day: "Happy new year eve!", "Happy birthday!", "Happy Friday!"
    r"|happy\s+(?:new\s+year(?:'s)?(?:\s+eve)?|birthday|holidays?|anniversary|thanksgiving|easter|halloween"
    r"|hanukkah|diwali|valentine'?s?|mother'?s|father'?s|\w+day|new\s+year's)\b)",
    re.IGNORECASE,
)
# Compliments, reassurance and promises to stay in touch: said to the listener about the listener
# or the chat itself, nothing a person would want remembered ("Your hikes sound like a blast",
# "You must be so proud", "I'm glad it worked out", "I'll keep you posted").
_COMPLIMENT = re.compile(
    r"^(?:you(?:r(?:\s+[\w'-]+){1,2})?\s+(?:really |totally |definitely |truly |just |all )*"
    r"(?:sounds?|looks?|seems?)\b"
    r"|you(?:'re| are)\s+(?:so |really |very |such |truly |just |totally |definitely |an? |the )*"
    r"(?:talented|amazing|awesome|great|incredible|inspiring|an inspiration|brave|strong|kind|sweet"
    r"|lucky|right|best|welcome|doing (?:great|amazing|awesome|so well))\b"
    r"|you\s+must\s+(?:be|feel|have been|have felt|love)\b"
    r"|you\s+(?:deserve|nailed|rock|did (?:great|amazing|awesome|it))\b"
    r"|i(?:'m| am)\s+(?:so |really |very |super |truly |just )*(?:glad|relieved)\b"
    r"|i(?:'m| am)\s+(?:so |really |very |super |truly |just )*proud of (?:you|what you|how you)\b)"
    r"|\b(?:keep you (?:posted|updated|in the loop)|let you know)\b",
    re.IGNORECASE,
)
_IMPERATIVE = _words(
    "check look take let's lets let come try keep don't see tell remember imagine chase enjoy go give stay "
    "make say be please congrats congratulations thanks thank sorry good great nice hope wish cheers "
    "here's here what's how's"
)
_FRAGMENT_ADJ = _words(
    "glad happy excited thrilled proud sad stoked pumped grateful thankful busy swamped keen ready "
    "lucky blessed tired exhausted"
)
_FRAGMENT_ADVERBS = _words(
    "even also just finally recently actually then really totally still already lately"
)
_NOT_GERUND = _words(
    "thing nothing something anything everything morning evening king spring string ring wedding "
    "building painting meeting feeling ceiling sing bring swing wing sibling darling amazing interesting "
    "exciting inspiring relaxing refreshing thrilling stunning charming boring annoying surprising touching "
    "heartwarming outstanding encouraging fascinating rewarding satisfying calming amusing disappointing "
    "frustrating terrifying welcoming loving caring"
)
_STOP = _words(
    "a an the and or but so to of in on at for with from by about as is are was were be been being am "
    "has have had do does did will would can could should might must may it its it's this that these "
    "those there here they them their he she his her him we our us you your i me my mine myself "
    "themselves not no yes very really just also too so such much many more most some any all both "
    "great good nice cool awesome amazing fun happy glad excited thing things stuff lot lots way bit "
    "gonna going get got make made like love well now then when what which who how why than off up out "
    "again still always never ever even only new other same can't cannot wait lucky sure best doing proud "
    "grateful thankful sweet kind tough hard true right thanks thank sorry okay ok yes yeah"
)
_PERSON_STOP = _words(
    "I I'm I've I'll I'd OK Okay TV God Mom Dad Mum Hey Hi Wow Yes Yeah No Thanks LOL BTW Oh Well So "
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July "
    "August September October November December Mon Tue Tues Wed Thu Thur Thurs Fri Sat Sun Jan Feb Mar "
    "Apr Jun Jul Aug Sep Sept Oct Nov Dec Christmas Easter Halloween Thanksgiving Internet "
    "English Spanish French American Congrats Congratulations Haha Anyway Sure Cool Awesome Great Nice "
    "Good Sorry Aww Omg Ooh Woah Whoa Yep Yup Nope Btw Also Plus And But"
)
_VOCATIVE_WORDS = _words("buddy dude man girl friend pal mate bro sis guys everyone")
# "my girlfriend Anna", "my best friend Tom": someone of the speaker's, named.
_NAMED_KIN = re.compile(
    rf"^\s*(?:my|our)\s+(?:new\s+|old\s+|little\s+|big\s+)?(?:{KIN})\s+(?-i:[A-Z])[\w'-]+\s*$", re.I
)
_ANIMALS = _words("dog cat puppy kitten pet bunny rabbit horse turtle bird hamster fish snake")
_PLACE_HEADS = _words(
    "park beach museum cafe café restaurant city town village lake mountain mountains store shop mall gym "
    "library church school center centre hospital home house office farm zoo studio theater theatre "
    "stadium campground camp island river forest trail bar pub hotel country state street road avenue "
    "garden gallery aquarium market coast falls canyon valley shelter clinic university college"
)
_ORG_HEADS = _words(
    "group club agency agencies team company organization organisation charity band program programme "
    "foundation association society network council committee inc llc corp corporation firm startup "
    "business nonprofit non-profit community crew league union"
)
_EVENT_HEADS = _words(
    "conference parade festival race party concert wedding meeting workshop class classes trip tournament "
    "show game event fundraiser marathon session competition comp performance audition interview "
    "ceremony celebration camping hike retreat seminar lecture talk"
)
_GENERIC_NP = _words(
    "it them one some something lot time thing things stuff place way bit kind part day week weekend "
    "month year this that these those everything anything nothing all lots fun home idea chance "
    "opportunity moment feeling reminder job morning afternoon evening night"
)
_SOMEONE = _words("someone somebody anyone anybody everyone everybody")
_NP_DETERMINERS = _words(
    "such a an the some this that these those his her their its our your my one another any all every"
)
_NP_ADJ_SKIP = _words(
    "new old local nearby great cool awesome amazing beautiful nice little big small first second few "
    "couple lot bunch whole own special really super very pretty"
)
_NP_STOP = _words(
    "and but or with for at in on to from by about of into onto over under after before since while "
    "when where which that who whom because so as like than it is was are were has had will would can "
    "could yesterday today tonight tomorrow last next this around during until with together again "
    "recently too also there here and, i now anymore instead already yet lately rn atm most every"
)
_NON_VERB_START = _words(
    "go see get do make have be check visit meet watch try help find take buy play learn start talk hang "
    "grab work spend"
)

# "X went to / joined / bought ..." -> predicate. Only inflected forms: "wants to visit Paris" is no visit.
_REL_VERBS: dict[str, str] = {
    "went to": "went_to", "has been to": "went_to", "had been to": "went_to", "is going to": "going_to",
    "visited": "visited", "visits": "visited", "traveled to": "went_to", "travelled to": "went_to",
    "flew to": "went_to", "drove to": "went_to", "moved to": "moved_to", "joined": "joined",
    "joins": "joined",
    "bought": "bought", "buys": "bought", "adopted": "adopted", "adopts": "adopted", "works at": "works_at",
    "worked at": "works_at", "works for": "works_at", "worked for": "works_at", "is working at": "works_at",
    "lives in": "lives_in", "lived in": "lives_in", "plays": "plays", "played": "plays",
    "is playing": "plays", "reads": "reads", "is reading": "reads", "attended": "attended",
    "attends": "attended", "loves": "likes", "loved": "likes", "likes": "likes", "liked": "likes",
    "enjoys": "likes", "enjoyed": "likes", "started": "started", "starts": "started",
    "is starting": "started", "painted": "made", "made": "made", "built": "built", "created": "made",
    "wrote": "wrote", "baked": "made", "has a": "has", "has an": "has", "has two": "has",
    "has three": "has", "signed up for": "signed_up_for", "volunteers at": "volunteers_at",
    "volunteered at": "volunteers_at", "studies": "studies", "studied": "studies", "is studying": "studies",
    "watched": "watched", "met": "met", "learned": "learning", "is learning": "learning", "won": "won",
    "lost": "lost", "is from": "from", "comes from": "from", "teaches": "teaches", "taught": "teaches",
    "teaches at": "works_at", "taught at": "works_at", "ran": "ran", "runs": "runs", "took": "took",
    "participated in": "participated_in",
    "finished": "finished", "owns": "owns", "got": "got", "received": "received", "found": "found",
    "is dating": "dating", "has been dating": "dating", "started dating": "dating", "married": "married",
    "is married to": "married", "got married to": "married", "is engaged to": "engaged_to",
    "got engaged to": "engaged_to",
}  # fmt: skip
# Who these name is a person ("Ann is dating Mia").
_REL_PERSON = frozenset({"met", "dating", "married", "engaged_to"})
# "Mia and Ann have been together", "Tom and Ann got married": the couple, the other one first.
_COUPLE_PREDICATE = {
    "together": "together_with", "a couple": "together_with", "dating": "dating", "engaged": "engaged_to",
    "married": "married",
}  # fmt: skip
_REL_PLACE = frozenset({"went_to", "going_to", "visited", "moved_to", "lives_in", "from"})
_ARTICLE_WORDS = frozenset({"a", "an", "the"})

# -- patterns -------------------------------------------------------------------------------------

_PHOTO = re.compile(r"\s*\[(?:photo|image|picture)\s*:\s*(.*?)\]\s*", re.IGNORECASE | re.DOTALL)
_CAPTION_PREFIX = re.compile(
    r"^(?:(?:a|an|the)\s+)?(?:close[- ]?up\s+)?(?:photo(?:graph)?y?|picture|image|pic|snapshot)\s+of\s+",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"')\]])\s+|\n+")
_ABBREV_END = re.compile(
    r"\b(?:(?i:Mr|Mrs|Ms|Dr|Prof)|[Ss]t|[Mm]t|[Ff]t|Jr|Sr|vs|etc|e\.g|i\.e|approx|U\.S|U\.K|a\.m|p\.m)\.$"
    r"|\b[A-Z]\.[A-Z]\.$"  # initials: "J.P. Morgan"
)
# Clause boundaries: dashes, semicolons, and "and/but/so" when a new subject follows.
_CLAUSE_SPLIT = re.compile(
    r"\s*;\s*|\s+[-–—]+\s+|\s*[–—]\s*|,?\s+(?:and|but|so)\s+(?=(?:i|i'm|i've|i'll|i'd|we|we're|we've"
    r"|it|it's|that|he|she|they|this|you|you're)\b)",
    re.IGNORECASE,
)
_LAST_PHRASE = re.compile(r",|\band\b")


def _one_subject(before: str, after: str) -> bool:
    """Whether "… and" joins a subject to the next clause's: a phrase of at most two words ("my
    teammates and I"), or someone of the speaker's named ("my girlfriend Anna and I")."""
    if _PRONOUN_CLAUSE.match(before.strip()):
        return False  # "I'm vegetarian and I drink coffee": two clauses of the speaker's
    return len(before.split()) < 3 or (
        _NAMED_KIN.match(before) is not None and after[:2].lower() in ("i ", "i'")
    )


_PRONOUN_CLAUSE = re.compile(r"(?:i|i'm|i've|i'll|i'd|we|we're|we've|he|she|they|it)\s", re.IGNORECASE)


_CONTINUATION = re.compile(
    r"^(?:it|it's|that|that's|this|which|they|they're|there|he|she|these|those|who|as|because|'cause)\b",
    re.IGNORECASE,
)
# A dated thing of one's schedule the user speaks of as "the" one ("The v2 launch is next Friday",
# "the billing migration deadline got pushed to May 3"): theirs, as "my" would say.
_THE_DATED_THING = re.compile(
    r"^(?P<lead>(?:(?:good|bad|great) news|update|fyi|btw|also|oh|so|and|but|ugh|heads up)[,:!]?\s+)?"
    rf"the\s+(?=(?:[\w'-]+\s+){{0,4}}?(?:{PLAN_NOUNS}|deadline|launch|release|review|exam|demo|presentation"
    r"|sprint|kickoff|due date|standup|offsite|checkup|check-up|shift|recital)\s+"
    r"(?:is|got|has been|slipped|was\s+(?:moved|pushed|postponed|delayed|rescheduled|bumped))\b)",
    re.IGNORECASE,
)
_FIRST_PERSON_START = re.compile(r"^(?:i|i'm|i've|i'll|i'd|my)\b", re.IGNORECASE)
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'll|i'd|me|my|mine|myself)\b(?!-)", re.IGNORECASE)
# "we" after when or what came before it: "Yesterday we got engaged", "On Friday we went hiking",
# "Last Christmas we got engaged", "Then we went hiking" (as the first word, `_WE_START`).
_WE_AFTER_LEAD = re.compile(
    r"^(?:(?:and\s+)?then|so|later|afterwards|after\s+that|recently|finally|eventually|yesterday|today"
    r"|tonight|(?:last|this|next|every|each)\s+\w+|(?:on|at|in|over)\s+(?:the\s+)?\w+(?:\s+\d+)?|\w+\s+\w+\s+ago)"
    r",?\s+(?:we|we're|we've|we'll|we'd)\b",
    re.IGNORECASE,
)
_WE_START = re.compile(r"^(?:we|we're|we've|we'll|we'd|our)\b", re.IGNORECASE)
_YOU_START = re.compile(r"^(?:you|you're|you've|you'll|you'd|your)\b", re.IGNORECASE)
_QUESTION_YN = re.compile(
    r"^(?:so\s+|and\s+|but\s+)?(did|do|have|are|were|will|can|could|would)\s+you\s+(.+?)\s*\?+$",
    re.IGNORECASE,
)
_ALTERNATIVE = re.compile(r"\bor\b", re.IGNORECASE)
_ANY = re.compile(r"\bany\b")
_ANSWER_YES = re.compile(r"^(?:yes|yeah|yep|yup|sure|definitely|absolutely|of course|totally|indeed)\b", re.I)
_ANSWER_NO = re.compile(r"^(?:no|nope|nah|not really|not yet)\b", re.IGNORECASE)
# Latin, Greek and Cyrillic letters by case, so that "Zoë", "Kraków" and "Łódź" are names as "Zoe" is.
_UPPER = "A-Z" + "".join(c for c in map(chr, range(0xC0, 0x530)) if c.isupper())
_LOWER = "a-z" + "".join(c for c in map(chr, range(0xC0, 0x530)) if c.islower())
# "O'Brien", "D'Souza": the apostrophe after O or D is inside the name (they were "Brien", "Souza").
# "GitHub", "FastAPI", "McDonald": capitals inside a name are part of it.
_NAME_WORD = f"(?:[OD]['’](?=[{_UPPER}]))?[{_UPPER}][{_LOWER}]+(?:[{_UPPER}]+[{_LOWER}]*)*"
# A title before a name is part of it ("Dr. Patel", "Mt. Rainier", "St. Luke's Hospital").
_PERSON_TITLES = ("Mr.", "Mrs.", "Ms.", "Dr.", "Prof.")
_TITLE_WORDS = frozenset(("Mr", "Mrs", "Ms", "Dr", "Prof", "St", "Mt", "Ft"))
_TITLE = rf"(?:{'|'.join(sorted(_TITLE_WORDS))})\.\s+"
_OPENING_PREPOSITIONS = _words("In At From To Near Around Outside Inside")
_INLINE_CODE = re.compile(r"`[^`\n]*`")


def _without_code(sentence: str) -> str:
    """The sentence with inline code blanked out (same length): "`pool_pre_ping=True`" names nothing."""
    return _INLINE_CODE.sub(lambda m: " " * len(m.group(0)), sentence) if "`" in sentence else sentence


# An acronym right before a name is part of it ("JR Pass", "AWS Lambda").
_ACRONYM_BEFORE = re.compile(r"\b([A-Z]{2,5})\s+$")
_CAPITALISED = re.compile(
    rf"\b(?:{_TITLE})?{_NAME_WORD}(?:[-'][{_UPPER}]?[{_LOWER}]+)?(?:\s+{_NAME_WORD})*\b"
)
# What may stand before a sentence's first word: quotes, brackets, and the list markers, numbers,
# headings and emphasis of markdown ("- **Focus**: ...", "2. Research the company"): a capital
# there is the sentence's, not a name's (BEAM's assistant answers made "Ensure", "If", "Be" entities).
_SENTENCE_LEAD = re.compile(r"[\s\"'“(\[*_#>`~•\-–—¡¿]*(?:\d+[.)]|[a-z][.)])?[\s\"'“(\[*_#>`~•\-–—¡¿]*")


def _opens(sentence: str, start: int) -> bool:
    """Whether the word at `start` is the first word of `sentence` (its lead aside)."""
    return _SENTENCE_LEAD.fullmatch(sentence, 0, start) is not None


_QUOTED = re.compile(r"[\"“]([^\"”]{2,60})[\"”]")
_KIN_NAME = re.compile(rf"\b(?:my|{_NAME_WORD}'s)\s+({KIN})\s+(?:named\s+|called\s+)?({_NAME_WORD})\b")
_KIN_IS_NAME = re.compile(rf"\b(?:my|{_NAME_WORD}'s)\s+({KIN})\s+is\s+({_NAME_WORD})(?:\s*[.!,]|\s*$)")
_NAMED = re.compile(rf"\b(?:a|an|the)\s+({KIN})\s+(?:named|called)\s+({_NAME_WORD})\b")
# "My sister Lena is a doctor. She lives in Rome.": the second sentence is about Lena, and read
# alone it stated nothing (no one's "She"). A sentence opening "She"/"He" right after one that
# names exactly one someone of the speaker's of that gender (or either) is about them.
_MY_KIN = re.compile(rf"\b[Mm]y\s+((?:{KIN})(?:\s+(?:named\s+|called\s+)?{_NAME_WORD})?)\b")
_HER_KIN = _words("sister mom mother wife daughter girlfriend aunt grandma grandmother")
_HIS_KIN = _words("brother dad father husband son boyfriend uncle grandpa grandfather")
# "I have a dog named Rex", "We adopted a cat called Mochi": someone the speaker has, named.
_SPEAKER_HAS = re.compile(r"^(?:I|We)\s+(?:(?:just|recently|finally)\s+)?(?:have|had|got|adopted|rescued)\b")
_OPENING_PRONOUN = re.compile(r"^(?P<pronoun>She|He)(?P<rest>(?:'s|\s+[a-z]))")
# "Her name is Pepper" after "I adopted a cat": the cat's name.
_OPENING_NAME = re.compile(r"^(?P<pronoun>her|his|its)\s+(?P<rest>name\s+is\b.*)", re.IGNORECASE)
# An animal of the speaker's not yet named: "I adopted a cat", "we just got a new puppy".
_AN_ANIMAL = re.compile(rf"\b(?:a|an)\s+(?:new\s+|little\s+|second\s+)?({'|'.join(sorted(_ANIMALS))})\b")


def _about_referent(sentence: str, referent: str | None) -> str:
    """`sentence` with an opening "She"/"He" put as the `referent` ("my sister Lena") it stands for."""
    if referent is not None and referent in _ANIMALS and (named := _OPENING_NAME.match(sentence)):
        # An animal not yet named ("My sister adopted a cat. Her name is…" may name the sister).
        return f"My {referent}'s {named.group('rest')}"
    opening = _OPENING_PRONOUN.match(sentence) if referent else None
    if referent is None or opening is None:
        return sentence
    kin = referent.split()[0].lower()
    if kin in (_HIS_KIN if opening.group("pronoun") == "She" else _HER_KIN):
        return sentence
    rest = sentence[opening.start("rest") :]
    if rest.startswith("'s"):  # "Lena's 40" reads as Lena's something: "is" or "has" in full
        rest = (" has" if re.match(r"'s\s+(?:been|got|gotten)\b", rest) else " is") + rest[2:]
    return f"My {referent}{rest}"


def _referent(sentence: str) -> str | None:
    """The one someone of the speaker's a sentence names ("my sister Lena", "I have a dog named
    Rex"), if just one."""
    named = _MY_KIN.findall(sentence)
    if not named and _SPEAKER_HAS.match(sentence):
        named = [f"{kin} {name}" for kin, name in _NAMED.findall(sentence)] or _AN_ANIMAL.findall(sentence)
    return named[0] if len(named) == 1 else None


_EMOJI_TAIL = re.compile(r"[\s:;)(<3^_\-\u2600-\u27bf\U0001f000-\U0001faff]+$")
_PLAN = re.compile(
    r"\b(?:going to|gonna|will|plan|plans|planning|planned to|want to|wanna|wants to|hope to|hoping to"
    r"|intend|thinking (?:about|of)|looking forward|can't wait|cannot wait|about to|aiming to|aim to"
    r"|would love to|would like to|(?:goal|dream|plan) is to|next|tomorrow|tonight|soon|upcoming"
    r"|considering|excited to|aspire)\b"
    r"|'ll\b|'d (?:love|like) to\b",
    re.IGNORECASE,
)
# Run on rewritten third-person text, so "I love" is already "Caroline loves" and "love" the noun is no verb.
_PREFERENCE = re.compile(
    r"\b(?:loves|loved|likes|liked|enjoys|enjoyed|enjoying|adores|prefers|preferred|hates|hated"
    r"|favou?rite|fave|fav|can't stand|fan of|passionate about|fond of|keen on|obsessed with"
    r"|would rather|would prefer|'d rather|'d prefer|(?:is|am|are) (?:a )?(?:vegetarian|vegan|pescatarian)"
    r"|(?:doesn't|does not|don't|do not) eat"
    r"|and others (?:love|like|enjoy|prefer|hate))\b"
    r"|\b(?:am|is|are|been|really|so)\s+(?:into|loving)\b",
    re.IGNORECASE,
)
_PAST_ACTION = re.compile(
    r"\b(?:went|visited|joined|bought|adopted|ran|made|took|got|painted|finished|started|attended|met|saw"
    r"|watched|played|won|lost|moved|traveled|travelled|did|spent|tried|learned|signed|gave|received|found"
    r"|built|wrote|baked|cooked|hiked|camped|drew|sang|danced|volunteered|celebrated|graduated|passed"
    r"|applied|completed|created|launched|opened|hosted|organized|organised|performed|taught|read|flew"
    r"|drove|swam|fell|broke|hurt|quit|picked|threw|raised|donated|participated|explored|tried|\w+ed)\b",
    re.IGNORECASE,
)


@dataclass(slots=True)
class _EntityAcc:
    name: str
    type: EntityType
    aliases: dict[str, None] = field(default_factory=dict)
    sure: bool = False  # the type came from "my dog Oliver", not from a guess on capitalisation


@dataclass(slots=True)
class _Statement:
    text: str  # the rewritten, self-contained sentence
    kind: FactKind
    subject: str
    ids: tuple[str, ...]
    valid_from: datetime | None
    confidence: float
    importance: float


class RulesExtractor:
    """Offline, deterministic extractor built on regular expressions. See the module docstring."""

    name = "rules"

    def extract(self, turns: Sequence[Turn], *, known_people: Collection[str] = ()) -> Extraction:
        """Extract facts, entities and relations from a batch of turns (in time order)."""
        return _Batch(turns, known_people).run()


class _Batch:
    """The state of one `extract` call: who speaks, which names are known, what was found so far."""

    def __init__(self, turns: Sequence[Turn], known_people: Collection[str] = ()) -> None:
        self.turns = [t for t in turns if t.role not in ("system", "tool")]
        speakers = list(dict.fromkeys(t.speaker for t in self.turns))
        self.speakers = set(speakers)
        # "you" is only known in a two-person chat; in a group it could be anyone.
        self.other: dict[str, str] = (
            {speakers[0]: speakers[1], speakers[1]: speakers[0]} if len(speakers) == 2 else {}
        )
        self.vocatives = {s.lower() for s in speakers} | _VOCATIVE_WORDS
        self.names: set[str] = set(self.speakers)
        # People of earlier adds, known by first name too ("Jon" of "Jon Smith").
        self.names |= {
            first
            for name in known_people
            if (first := (name.split() or [""])[0])[:1].isupper() and first not in _PERSON_STOP
        }
        self.entities: dict[str, _EntityAcc] = {}
        self.statements: list[_Statement] = []
        self.instructions: list[ExtractedFact] = []
        self.relations: list[tuple[str, str, str, _Statement]] = []

    # -- driver ----------------------------------------------------------------------------------

    def run(self) -> Extraction:
        texts = [_normalise(t.text) for t in self.turns]
        split: list[tuple[list[str], list[str]]] = []
        for text in texts:
            captions = _PHOTO.findall(text) if "[" in text else []
            body = _PHOTO.sub(" ", text).strip() if captions else text
            sentences = _sentences(body)
            split.append((sentences, captions))
            self._collect_names(sentences)
        for speaker in self.speakers:
            if not _is_role_name(speaker):
                self._add_entity(speaker, "person")
        previous: tuple[Turn, list[str]] | None = None
        # Whom a speaker's last turn ended on ("my sister Lena"), and at which turn: "She moved to
        # Berlin" in their next message (after at most one reply) is about her.
        referents: dict[str, tuple[int, str | None]] = {}
        for index, (turn, (sentences, captions)) in enumerate(zip(self.turns, split, strict=True)):
            if not _is_unnamed_assistant(turn):
                if previous is not None and previous[0].speaker != turn.speaker and sentences:
                    self._answer(previous[0], previous[1], turn, sentences[0])
                last, referent = referents.get(turn.speaker, (-9, None))
                referents[turn.speaker] = (
                    index,
                    self._turn(turn, sentences, referent if index - last <= 2 else None),
                )
                for caption in captions:
                    self._photo(turn, caption)
            self._mentions(sentences)
            previous = (turn, sentences)
        return self._finish()

    def _turn(self, turn: Turn, sentences: list[str], referent: str | None = None) -> str | None:
        """Read a turn's sentences (`referent`: whom an opening "She"/"He" stands for); returns whom
        its last sentence named."""
        # A subjectless "-ing" clause is the speaker's own news when it opens the turn ("Researching
        # adoption agencies") or follows their own statement; after a reaction it is mostly about the
        # other person ("Wow! Taking in kids in need - you're so kind").
        opening = True
        for said in sentences:
            if said_so := (_REMEMBER_THAT.match(said) or _FRAMED_STATEMENT.match(said)):
                said = capitalised(said[said_so.end() :].rstrip("?").rstrip())
            sentence = _about_referent(said, referent)
            referent = _referent(sentence)
            if (
                (asked_order := _ASKED_ORDER.match(sentence))
                and _STANDING.search(sentence)
                and (order := _instruction(sentence[asked_order.end() :].rstrip(" ?"), turn))
            ):
                self.instructions.append(order)
                continue
            if not sentence.endswith("?") and _ASKED_UNMARKED.match(sentence):
                after = _STATEMENT_AFTER.search(sentence)
                if after is None:
                    opening = False
                    continue
                sentence = capitalised(sentence[after.end() :])
            if sentence.endswith("?"):
                # A question states no fact, but what the speaker says before asking it does: "I'm
                # building a budget app, and I prefer minimal dependencies, so can you help me…?"
                statement = _statement_before_question(sentence)
                opening = False
                if statement is None:
                    continue
                sentence = statement
            elif (asked := _ASKING_INVERTED.search(sentence)) and _instruction(sentence, turn) is None:
                # An instruction ("When I ask about taxes, please always give the year") is kept whole.
                sentence = sentence[: asked.start()].strip(" ,;")
            if _in_another_language(sentence) or SECRET.search(sentence):
                continue
            instruction = _instruction(sentence, turn)
            if instruction is not None:
                self.instructions.append(instruction)
                continue
            sentence = _LABEL.sub("", _THE_CALLED_OFF.sub("My ", sentence, count=1), count=1)
            if turn.role == "user" and has_trigger(sentence):
                sentence = _THE_DATED_THING.sub(r"\g<lead>my ", sentence, count=1)
            if _BARE_FAVOURITE.match(sentence) or (
                turn.role == "user" and _BARE_AMOUNT_START.match(sentence)
            ):
                sentence = f"My {sentence[0].lower()}{sentence[1:]}"
            elif _SUBJECTLESS_AM.match(sentence):
                sentence = f"I {sentence[0].lower()}{sentence[1:]}"
            groups, had_content = self._clause_groups(sentence, turn.speaker, opening)
            narrating = False
            for group in groups:
                stmt = self._statement(group, turn)
                if stmt is not None:
                    self._add_statement(stmt)
                    narrating = narrating or stmt.subject == turn.speaker
            opening = narrating or (opening and not had_content)
        return referent

    # -- sentences and clauses --------------------------------------------------------------------

    def _clause_groups(
        self, sentence: str, speaker: str, opening: bool
    ) -> tuple[list[tuple[str, bool]], bool]:
        """Clauses that carry their own subject, each with the subjectless clauses that follow it.

        Returns the groups, each with whether it may be read as a gerund fragment, and whether the
        sentence had any content at all once greetings and filler were stripped.
        """
        groups: list[tuple[str, bool]] = []
        had_content = False
        pos = 0
        pieces: list[tuple[str, str]] = []
        splittable = any(c in sentence for c in ";-–—") or _SPLIT_WORDS.search(sentence)
        for m in _CLAUSE_SPLIT.finditer(sentence) if splittable else ():
            if m.group(0).strip(" ,").isalpha() and _one_subject(
                _LAST_PHRASE.split(sentence[pos : m.start()])[-1], sentence[m.end() :]
            ):
                continue  # "my teammates and I were thrilled" is one subject, not two clauses
            pieces.append((sentence[pos : m.start()], m.group(0)))
            pos = m.end()
        pieces.append((sentence[pos:], ""))
        sep_before = ""
        for raw, sep_after in pieces:
            clause = self._clean(raw)
            if clause:
                gerund_ok = opening and not had_content
                had_content = True
                if self._subject(clause, speaker, gerund_ok) is not None and (
                    not groups or self._subject_at_start(clause, speaker)
                ):
                    groups.append((clause, gerund_ok))
                elif groups:
                    # No subject of its own: it elaborates on the clause before ("- it was rewarding").
                    joiner = sep_before.strip()
                    joiner = (
                        f", {joiner} " if joiner.isalpha() else " - " if joiner not in ("", ";") else "; "
                    )
                    groups[-1] = (groups[-1][0] + joiner + clause, groups[-1][1])
            sep_before = sep_after
        return groups, had_content

    def _clean(self, clause: str) -> str:
        """Strip greetings, reactions, labels and the addressee: "Wow, Caroline! Yeah, I went" ->
        "I went", "Big news: I got a job" -> "I got a job"."""
        c = clause.strip()
        while c:
            m = _FIRST_WORD.match(c)
            if m is None:
                break
            word = m.group(1)
            low = c[:24].lower()
            two = next((p for p in _FILLER_PHRASES if low.startswith(p)), None)
            if two is not None and (len(c) == len(two) or not c[len(two)].isalnum()):
                c = c[len(two) :].lstrip(" ,!.…")
            elif opener := _SET_OFF_OPENER.match(c):
                c = c[opener.end() :]
            elif word.lower() in _FILLER_WORDS:
                c = c[m.end() :]
            elif m.group(2) and self._is_vocative(word):
                c = c[m.end() :]  # "Caroline, I ..."
            else:
                break
        if label := _LABEL.match(c):
            c = c[label.end() :]
        if "," in c:
            m = _TRAILING_WORD.search(c)
            if m and self._is_vocative(m.group(1)):
                c = c[: m.start()]  # "..., Mel!"
        c = _TRAILING_FILLER.sub("", c)
        c = c.rstrip(" .!…,")
        if c and not c[-1].isalnum():
            c = _EMOJI_TAIL.sub("", c).rstrip(" .!…,")
        return c

    def _is_vocative(self, word: str) -> bool:
        w = word.lower()
        if w in self.vocatives:
            return True
        # "Mel" for "Melanie": good enough to strip a greeting, never to merge entities.
        return len(w) >= 3 and any(s.lower().startswith(w) for s in self.speakers)

    def _subject(self, clause: str, speaker: str, gerund_ok: bool) -> tuple[str, str, float] | None:
        """Who a clause is about, the words to put before it, and how sure that is; None to skip it."""
        first = clause.split(maxsplit=1)[0].lower().rstrip(",!.")
        if first in _IMPERATIVE or _FILLER.match(clause) or _COMPLIMENT.search(clause):
            return None
        if _DIED.match(clause):
            # "Tiger passed away this morning": news the speaker tells, of someone theirs.
            return speaker, "", 0.6
        named = self._named_subject(clause)
        if named:
            return named, "", 0.7
        if _FIRST_PERSON_START.match(clause) or _WE_START.match(clause) or _WE_AFTER_LEAD.match(clause):
            return speaker, "", 0.7
        other = self.other.get(speaker)
        if other and _YOU_START.match(clause):
            return other, "", 0.5
        prefix = _fragment_prefix(clause, gerund_ok)
        if prefix is not None:
            return speaker, prefix.replace("S", speaker, 1), 0.6
        if _FIRST_PERSON.search(clause):
            return speaker, "", 0.7
        return None

    def _subject_at_start(self, clause: str, speaker: str) -> bool:
        return bool(
            _FIRST_PERSON_START.match(clause)
            or _WE_START.match(clause)
            or (self.other.get(speaker) and _YOU_START.match(clause))
            or self._named_subject(clause)
        )

    def _named_subject(self, clause: str) -> str | None:
        # "Mia and I broke up" is the speaker's own news, said with Mia.
        # "Jon Smith got promoted", Jon being known: news of Jon Smith (a run merges the two names).
        m = re.match(
            rf"^(({_NAME_WORD})(?:\s+{_NAME_WORD})?)(?:'s)?\s+(?!(?:and|&)\s+(?:I|me)\b)[a-z]", clause
        )
        if m and m.group(2) in self.names and m.group(2) not in _PERSON_STOP:
            return m.group(1)
        return None

    # -- statements -------------------------------------------------------------------------------

    def _statement(self, group: tuple[str, bool], turn: Turn) -> _Statement | None:
        clause, gerund_ok = group
        speaker = turn.speaker
        other = self.other.get(speaker)
        found = self._subject(clause, speaker, gerund_ok)
        if found is None:
            return None
        subject, prefix, confidence = found
        importance = 0.3 if subject == other else 0.5
        if prefix:
            clause = prefix + clause[0].lower() + clause[1:]
        tense = tense_of(clause)
        dates = resolve_dates(clause, turn.event_at, prefer=tense)
        if _ANNUAL.search(clause):
            # "My birthday is on October 3rd" is every year's: no year is added, and it is no plan.
            dates = [d for d in dates if not _A_DAY_OF_THE_YEAR.search(d.span)]
        date = main_date(dates)
        text = rewrite_relative(clause, dates)
        text = _third_person(text, speaker, other)
        text = _polish(text)
        # "I'm Lucía, I work as a nurse": saying who one is states nothing ("Lucía is Lucía").
        text = re.sub(rf"^{re.escape(speaker)} is {re.escape(speaker)}\b[,;]?\s*", "", text)
        kind = _kind(text, subject, date, turn.event_at)
        if (
            not (_has_content(text, subject) or _AGE_STATED.match(text[len(subject) :]))
            or _only_a_reaction(text, subject)
            or _an_intention_of_it(text, subject)
        ):
            return None
        if date is not None:
            valid_from: datetime | None = date.value
            importance += 0.1
        else:
            valid_from = None if kind == "plan" else turn.event_at
        if kind in ("plan", "event", "preference"):
            importance += 0.1
        return _Statement(
            text, kind, subject, (turn.message_id,), valid_from, confidence, round(min(importance, 1.0), 2)
        )

    def _answer(self, q_turn: Turn, q_sentences: list[str], a_turn: Turn, a_first: str) -> None:
        """A bare "Yes, I did!" states the question's content; the fact cites both turns."""
        if not q_sentences or not q_sentences[-1].endswith("?"):
            return
        m = _QUESTION_YN.match(q_sentences[-1])
        if m is None:
            return
        a = a_first
        yes = bool(_ANSWER_YES.match(a))
        if not yes and not _ANSWER_NO.match(a):
            return
        aux, rest = m.group(1).lower(), m.group(2)
        if _ALTERNATIVE.search(rest):
            return  # "Do you have X, or know Y?": a yes does not say which
        if yes:
            rest = _ANY.sub("some", rest)
        who = a_turn.speaker
        words = rest.split()
        if not words:
            return
        if aux == "did":
            verb = words[0].lower()
            head = _past(verb) if yes else f"did not {verb}"
            body = " ".join([head, *words[1:]])
        elif aux == "do":
            verb = words[0].lower()
            head = _third_singular(verb) if yes else f"does not {verb}"
            body = " ".join([head, *words[1:]])
        else:
            aux3 = {"have": "has", "are": "is", "were": "was", "can": "can", "could": "could"}.get(aux, aux)
            body = f"{aux3} {rest}" if yes else f"{aux3} not {rest}"
        # In the question, "you" is the one answering and "I/my" the one asking.
        sentence = _third_person(f"{who} {body}", q_turn.speaker, None)
        sentence = re.sub(r"\byour\b", f"{who}'s", sentence, flags=re.IGNORECASE)
        sentence = re.sub(r"\byou\b", who, sentence, flags=re.IGNORECASE)
        sentence = re.sub(r"\byourself\b", "themselves", sentence, flags=re.IGNORECASE)
        dates = resolve_dates(rest, q_turn.event_at)
        sentence = _polish(rewrite_relative(sentence, resolve_dates(sentence, q_turn.event_at)))
        if not _has_content(sentence, who):
            return
        date = main_date(dates)
        kind = _kind(sentence, who, date, q_turn.event_at)
        valid_from = date.value if date else (None if kind == "plan" else a_turn.event_at)
        self._add_statement(
            _Statement(sentence, kind, who, (q_turn.message_id, a_turn.message_id), valid_from, 0.6, 0.5)
        )

    def _photo(self, turn: Turn, caption: str) -> None:
        what = _CAPTION_PREFIX.sub("", caption.strip().rstrip("."))
        if not what:
            return
        text = f"{turn.speaker} shared a photo of {what}"
        self._add_statement(
            _Statement(text, "event", turn.speaker, (turn.message_id,), turn.event_at, 0.6, 0.3)
        )

    def _add_statement(self, stmt: _Statement) -> None:
        self.statements.append(stmt)
        if stmt.subject in self.speakers:
            self._add_entity(stmt.subject, "person")
        elif stmt.subject in self.names:
            self._add_entity(stmt.subject, "other")
        named = _someone_named(stmt.text, stmt.subject)
        for predicate, obj, etype in _relations(stmt.text, stmt.subject, self.names):
            if any(obj.lower().startswith(kin) for _, kin, _ in named):
                continue  # "has a dog named Rex": the one named is the entity, not "dog named Rex"
            # Where one works is an employer, whatever "at" before its name first suggested.
            self._add_entity(obj, etype, sure=predicate == "works_at")
            self.relations.append((stmt.subject, predicate, obj, stmt))
        for owner, kin, name in named:
            self._add_entity(name, "other" if kin in _ANIMALS else "person", sure=True)
            self.relations.append((owner, "has_" + kin.replace(" ", "_").replace("-", "_"), name, stmt))

    # -- entities -----------------------------------------------------------------------------------

    def _collect_names(self, sentences: list[str]) -> None:
        """Capitalised words not at the start of a sentence are name candidates for the whole batch."""
        for sentence in map(_without_code, sentences):
            for m in _CAPITALISED.finditer(sentence):
                if _opens(sentence, m.start()):
                    continue
                name = m.group(0)
                if " " not in name and name not in _PERSON_STOP:
                    self.names.add(name)

    def _mentions(self, sentences: list[str]) -> None:
        """Named things a turn mentions, even in a question: people, places, organisations, titles."""
        for sentence in map(_without_code, sentences):
            for m in _CAPITALISED.finditer(sentence):
                words = m.group(0).split()
                stop = 0
                while stop < len(words) and words[stop] in _PERSON_STOP:
                    stop += 1
                words = words[stop:]
                # "In Tokyo, look for…": the "In" is no part of the name, and says what it is.
                preposition = (
                    words.pop(0) + " " if len(words) > 1 and words[0] in _OPENING_PREPOSITIONS else ""
                )
                if not words:
                    continue
                name = " ".join(words)
                if (
                    not stop
                    and not preposition
                    and (acronym := _ACRONYM_BEFORE.search(sentence, 0, m.start()))
                ):
                    name = f"{acronym.group(1)} {name}"  # "the JR Pass" is no "Pass"
                after = sentence[m.end() : m.end() + 8]
                start_of_sentence = _opens(sentence, m.start()) and not stop
                # At a sentence's start a capital says nothing, unless a title or "and I" does.
                named = name in self.names or name.startswith(_PERSON_TITLES) or _PERSON_AFTER.match(after)
                if start_of_sentence and not named:
                    continue
                before = (sentence[max(0, m.start() - 24) : m.start()] + preposition).lower()
                self._add_entity(name, _name_type(name, before, after, self.names, self.speakers))
            for title in _QUOTED.findall(sentence) if '"' in sentence or "“" in sentence else ():
                if len(title.split()) <= 8:
                    self._add_entity(title.strip(" .,!"), "thing")

    def _add_entity(self, name: str, etype: EntityType, *, sure: bool = False) -> None:
        key = _entity_key(name)
        if not key:
            return
        surface = _strip_article(name)
        acc = self.entities.get(key)
        if acc is None:
            acc = self.entities[key] = _EntityAcc(surface, etype)
        elif surface != acc.name:
            acc.aliases[surface] = None
        if sure or (not acc.sure and acc.type in ("other", "thing") and etype not in ("other", "thing")):
            acc.type = etype
            acc.sure = acc.sure or sure

    def _finish(self) -> Extraction:
        facts: dict[str, ExtractedFact] = {}
        for s in self.statements:
            fkey = s.text.lower()
            prior = facts.get(fkey)
            ids = s.ids if prior is None else tuple(dict.fromkeys(prior.source_message_ids + s.ids))[:3]
            facts[fkey] = ExtractedFact(
                content=s.text,
                kind=s.kind,
                subject=s.subject,
                source_message_ids=ids,
                valid_from=s.valid_from if prior is None else prior.valid_from,
                confidence=s.confidence,
                importance=s.importance,
            )
        for instruction in self.instructions:
            facts.setdefault(instruction.content.lower(), instruction)
        canonical = {k: a.name for k, a in self.entities.items()}
        relations: dict[tuple[str, str, str], ExtractedRelation] = {}
        for subj, pred, obj, stmt in self.relations:
            s_name = canonical.get(_entity_key(subj), subj)
            o_name = canonical.get(_entity_key(obj), obj)
            if s_name == o_name:
                continue
            rkey = (s_name, pred, o_name.lower())
            if rkey not in relations:
                relations[rkey] = ExtractedRelation(
                    s_name, pred, o_name, stmt.text, stmt.ids, stmt.valid_from
                )
        # An entity's sources are the messages that name it (not the turns a fact about it came
        # from: a speaker's own turns do not name them); one named nowhere in the batch stays only
        # as the end of a relation, without sources.
        ends = {name for r in relations.values() for name in (r.subject, r.object)}
        entities = [
            ExtractedEntity(a.name, a.type, (), tuple(x for x in a.aliases if x != a.name))
            for a in self.entities.values()
        ]
        entities = [e for e in name_sources(entities, self.turns) if e.source_message_ids or e.name in ends]
        return Extraction(
            facts=list(facts.values()),
            entities=entities,
            relations=list(relations.values()),
            extractor="rules",
        )


# -- text helpers ---------------------------------------------------------------------------------


# A fenced block of code (or a log, a traceback) is no prose: its words made entities ("None",
# "Optional", "Proxy", a file path) and its lines facts. The message keeps it; the rules skip it.
_CODE_BLOCK = re.compile(r"^[ \t]*(```|~~~).*?(?:^[ \t]*\1[^\n]*$|\Z)", re.MULTILINE | re.DOTALL)


# Contractions typed without their apostrophe ("i dont eat meat anymore" became "Tom donts eat
# meat"); words that are also words without one ("ill", "id", "well", "shell") are left alone.
_BARE_CONTRACTION = re.compile(
    r"\b(?P<w>(?:do|does|did|ca|wo|is|are|was|were|have|has|had|could|should|would|must|need)n)t\b"
    r"|\b(?P<i>[iI])(?P<r>m|ve)\b"
)


_BACKTICK_APOSTROPHE = re.compile(r"(?<=[^\W_])`(?=(?:t|s|m|re|ve|ll|d)\b)")


def _apostrophe(m: re.Match[str]) -> str:
    return f"{m.group('w')}'t" if m.group("w") else f"{m.group('i')}'{m.group('r')}"


def _normalise(text: str) -> str:
    if "```" in text or "~~~" in text:
        text = _CODE_BLOCK.sub("\n", text)
    text = text.replace("’", "'").replace("‘", "'")
    if "`" in text:  # "don`t" is an apostrophe typed so; "`pool_pre_ping=True`" is code (`_without_code`)
        text = _BACKTICK_APOSTROPHE.sub("'", text)
    return _BARE_CONTRACTION.sub(_apostrophe, text)


# Where a run-on question starts asking ("…, so can you help me", "…, how can I", "… what do you
# think"): a wh-word or an auxiliary and its subject, after a comma or a joining word. "Which",
# "who", "where" and "when" after a comma mostly start a relative clause (", which Joshua
# recommended"), so they ask only before an auxiliary (", where should I start?").
_AUXILIARY = r"(?:can|could|would|will|should|shall|do|does|did|is|are|was|were|have|has|may|might|am)"
_ASKING = re.compile(
    rf"(?:,\s*|\s+(?:and|but|so|or)\s+)(?:(?:and|but|so|or)\s+)?(?:any\s+(?:\w+\s+)?(?:tips|ideas|advice|suggestions"
    rf"|recommendations|thoughts)\b"
    rf"|(?:what|how|why)\b|(?:where|when|which|who|whom|whose)\s+{_AUXILIARY}\b"
    rf"|(?:which|what)\s+(?:[\w-]+\s+){{1,5}}{_AUXILIARY}\s+(?:you|i|we)\b"  # ", which route would you…"
    rf"|{_AUXILIARY}\s+(?:you|i|we|it|they|he|she|this|that|there|these|those|my|your|the|a|an)\b)",
    re.IGNORECASE,
)


# A question asked mid-sentence and not ended with its mark ("…, so I prefer minimal dependencies,
# how can I keep my app small, considering the deadline.", "…, is it too late to open an IRA",
# "…, any tips"), or a request to the assistant ("…, so please keep that in mind"), after a comma
# or a joining word: an auxiliary before its subject, or the few openers that only ask. Without
# the mark only these tell it from a statement that goes on with a wh-word ("…, and how we fixed
# it").
_ASKING_INVERTED = re.compile(
    rf"(?:,\s*|\s+(?:and|but|so|or)\s+)(?:(?:and|but|so|or)\s+)?(?:(?:(?:what|how|why|where|when|which)\s+"
    rf"(?:[\w-]+\s+){{0,4}})?{_AUXILIARY}\s+(?:you|i|we|it|this|that|there)\b|please\b"
    rf"|any\s+(?:\w+\s+)?(?:tips|ideas|advice|suggestions|recommendations|thoughts)\b"
    rf"|what(?:'s|\s+is)\s+(?:the|a)\s)",
    re.IGNORECASE,
)
# A question typed without its mark, asking from its first word: "how do i make sourdough
# starter", "should i buy a heat pump or a furnace", "can you help me write an email" (not "What I
# love is hiking": the auxiliary comes before its subject).
_ASKED_UNMARKED = re.compile(
    r"^(?:(?:so|ok|okay|hey|hi|and|but|also|btw|quick question|hmm+)[,:!.]*\s+)*"
    rf"(?:(?:what|how|why|where|when|which|who)(?:\s+[\w-]+)?\s+{_AUXILIARY}(?:n't)?\s+"
    r"(?:you|i|we|it|they|there|he|she|my|your|the|a|an|this|that|these|those)\b"
    rf"|{_AUXILIARY}(?:n't)?\s+(?:you|i|we|it|they|there|he|she)\b"
    r"|(?:what|how|where|who)'s\s+(?:a|an|the|my|your|it|that|this|up|going)\b)",
    re.IGNORECASE,
)
# A statement after an unmarked question, set off by a comma: "what should i cook tonight, i'm
# allergic to peanuts", "how lucky am I, I got engaged last night!".
_STATEMENT_AFTER = re.compile(
    r",\s+(?:(?:and|but|so|because|cause|since)\s+)?(?=(?:i|i'm|i've|i'd|i'll|my|we|we're|we've|our)\b)",
    re.IGNORECASE,
)
# What follows a framing that leaves the speaker's statement whole: it opens with I/my/we.
_SPEAKER_AHEAD = r"(?=(?:i|i'm|i've|i'd|my|we|we're|we've|our)\b)"
# What frames a statement as a question: "did you know I got a dog", "is it weird that I love
# opera", "would you believe I ran a marathon" state what follows.
_FRAMED_STATEMENT = re.compile(
    r"^(?:(?:so|ok|okay|hey|oh|and|btw)[,!]*\s+)*(?:did you know|did i (?:ever )?tell you|would you believe"
    r"|guess what|is it (?:weird|normal|bad|ok|okay|strange|crazy|silly|wrong) (?:that|if)"
    r"|does it matter (?:that|if))"
    rf"(?:\s+that)?[,:]?\s+{_SPEAKER_AHEAD}",
    re.IGNORECASE,
)
# Asked to be remembered: "remember that i'm colorblind", "please remember I'm allergic to cats",
# "can you keep in mind that my son is 4?" state what follows ("remember to buy milk" does not).
_REMEMBER_THAT = re.compile(
    r"^(?:(?:please|pls|plz|hey|also|and|oh|btw|ok|okay)[,!]*\s+)*(?:(?:can|could|would|will)\s+you\s+)?"
    r"(?:please\s+)?(?:remember|note|keep in mind|don't forget|do not forget|make a note)(?:\s+that)?[,:]?\s+"
    rf"{_SPEAKER_AHEAD}",
    re.IGNORECASE,
)
# An order asked as a question, when it says it stands: "can you call me Sam from now on?", "could
# you always answer in Spanish?" (not "can you call me tomorrow?").
_STANDING = re.compile(r"\b(?:from now on|going forward|always|never|any\s?more|in (?:the )?future)\b", re.I)
_ASKED_ORDER = re.compile(
    r"^(?:(?:hey|hi|ok|okay|so|also|and)[,!]*\s+)*(?:can|could|would|will)\s+you\s+(?:please\s+)?",
    re.IGNORECASE,
)
# Where the question starts when it asks from its first word.
_ASKING_FIRST = re.compile(rf"(?:what|how|why|where|when|which|who|whom|whose|{_AUXILIARY})\b", re.IGNORECASE)
# "…, but I'm not sure how to start" leads into the question: the statement ends before it.
_UNSURE = re.compile(
    r"(?:^|,\s*|\s+)(?:(?:but|and|so)\s+)?i(?:'m| am)(?:\s+\w+)?\s+(?:not sure|unsure)\b", re.IGNORECASE
)
# What leads into a question rather than states anything: "enough about me", "I mean", "I want to
# ask you", "I was wondering", "I'm kinda curious", "my question is", "if I wanted to", "I want to
# make sure I'm doing this right".
_LEAD_IN = re.compile(
    r"\b(?:ask|asked|asking|wonder\w*|mean|curious|enough about|question)\b|^(?:if|whether|suppose)\b"
    r"|\bmake sure\b.*\b(?:right|correct\w*|properly)\b",
    re.IGNORECASE,
)


def _statement_before_question(sentence: str) -> str | None:
    """The statement a run-on question opens with ("I'm learning Flask, and I prefer minimal
    dependencies" of "…, so how can I add logins?"); None when it asks from its first word or
    only leads into the question."""
    m = _ASKING.search(sentence)
    if m is None:
        return None
    statement = _UNSURE.split(sentence[: m.start()], maxsplit=1)[0].strip(" ,;")
    if len(statement.split()) < 2 or _ASKING_FIRST.match(statement) or _LEAD_IN.search(statement):
        return None
    return statement


# "Rent went up to 1650", "Salary is now 65k", said by the user without "my": an amount of theirs
# (the amount follows; "Rent is crazy in NYC, 3000 for a studio" is about rent anywhere).
_BARE_AMOUNT = (
    rf"(?:(?:monthly|annual|yearly|new|current)\s+)?(?:{AMOUNT_KINDS})\s+"
    r"(?:is|went|was|rose|grew|dropped|fell|increased|decreased|jumped|improved|climbed)"
    r"(?:\s+(?:now|currently|still|only|about|around|roughly|at|up|down|to|finally))*\s+[$£€~]?\d"
)
_BARE_AMOUNT_START = re.compile(rf"^(?={_BARE_AMOUNT})", re.IGNORECASE)

# A label before what the speaker says ("Some context about my project: I'm building an invoicing
# API", "Quick update: we moved"): no part of the statement.
_LABEL = re.compile(
    r"^(?:(?:some|a bit of|quick|small|little|big|just an?|an?)\s+)?"
    r"(?:context|background|update|news|note|fyi|heads up|progress|status|info|recap|summary|tl;?dr|ps"
    r"|p\.s\.)\b[^:.!?]{0,30}:\s+"
    rf"(?=(?:i|i'm|i've|i'll|i'd|we|we're|we've|we'll|my|our)\b|{_BARE_AMOUNT})",
    re.IGNORECASE,
)


# "The Tokyo trip got cancelled", "The Berlin move fell through": a plan called off, said by one
# who had it (as "my trip" would be).
_THE_CALLED_OFF = re.compile(
    rf"^the (?=(?:[\w'-]+ ){{0,3}}?(?:{PLAN_NOUNS}) "
    r"(?:to [\w' -]+? )?(?:(?:was|got|has been|had been|is|were|have been) (?:cancell?ed|called off|scrapped)"
    r"|(?:is|are|was) off|fell through|has fallen through)\b)",
    re.IGNORECASE,
)


# A death told by name ("Tiger passed away", "Grandpa Joe died last night").
_DIED = re.compile(
    rf"^(?:{_NAME_WORD}\s+){{1,2}}(?:has\s+|just\s+)?(?:passed away|died(?!\s+down)|was put down)\b"
)
# "am moving to Denver in June", said without "I": only the speaker is "am".
_SUBJECTLESS_AM = re.compile(r"^am\s+(?!(?:i|you|we|they|he|she|it)\b)", re.IGNORECASE)
# "fave color is green now", said without "my": the speaker's favourite.
_BARE_FAVOURITE = re.compile(r"^(?=(?:fave|fav|favou?rite)\s+[\w-]+(?:\s+[\w-]+)?\s+is\b)", re.IGNORECASE)


def ends_in_abbreviation(text: str) -> bool:
    """Whether a period that ends `text` belongs to a title or an abbreviation ("Dr.", "e.g.")."""
    return _ABBREV_END.search(text) is not None


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    for piece in _SENTENCE_END.split(text):
        piece = piece.strip()
        if not piece:
            continue
        if out and ends_in_abbreviation(out[-1]):
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out


_GERUND_SUBJECT = re.compile(r"\b(?:is|are|was|were|'s|can|makes|helps|gives|has)\b", re.IGNORECASE)
_VERB_S = re.compile(r"[a-z]+[^s]s")
_YOU_ANYWHERE = re.compile(r"\byou(?:r|'re|'ve|'ll)?\b", re.IGNORECASE)


def _fragment_prefix(clause: str, gerund_ok: bool) -> str | None:
    """The subject to put before a subjectless clause ("Gonna continue my edu"), as a template with S."""
    words = clause.lower().split(maxsplit=3)
    # "Even made a tattoo", "Just got back": look past a leading adverb, keep it in the sentence.
    adverb = words[0] in _FRAGMENT_ADVERBS and len(words) > 1
    first = words[1] if adverb else words[0]
    gerund = first.endswith("ing") and len(first) > 4 and first not in _NOT_GERUND
    if adverb and not (first in _PAST_FORMS or first.endswith("ed") or first in ("gonna", "been") or gerund):
        return None
    if first in ("gonna", "going"):
        return "S is "
    if first == "been":
        return "S has "
    if first in ("wanna", "can't", "cannot", "gotta"):
        return "S "
    if first in _FRAGMENT_ADJ:
        return "S is "
    if first in ("love", "hope", "need", "miss", "wish"):
        return "S "  # conjugated later by _third_person's fragment pass
    if first in _PAST_FORMS - {"was", "were", "been", "used"} or (first.endswith("ed") and len(first) > 4):
        return "S "
    if gerund and gerund_ok:
        if _YOU_ANYWHERE.search(clause):
            return None  # "Taking in kids in need - you're so kind" is about the other person
        # "Taking care of ourselves is vital" is a gerund subject, not a fragment.
        head = re.split(r"\s[-;]\s|,", clause, maxsplit=1)[0]
        if _GERUND_SUBJECT.search(head) or (len(words) > 1 + adverb and _VERB_S.fullmatch(words[1 + adverb])):
            return None  # "Networking plays a big role": the -ing word is the subject
        return "S is "
    return None


# A date that comes every year ("my birthday is on October 3rd", "our anniversary is in June").
_ANNUAL = re.compile(r"\b(?:birthday|anniversary|name day|nameday)\s+(?:is|falls)\b", re.IGNORECASE)
_A_DAY_OF_THE_YEAR = re.compile(
    r"^(?:on\s+|in\s+)?(?:the\s+)?(?:\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?)?"
    rf"(?:{'|'.join(MONTH_NAMES.split())})"
    r"(?:\s+\d{1,2}(?:st|nd|rd|th)?)?$",
    re.IGNORECASE,
)


def _kind(text: str, subject: str, date: ResolvedDate | None, at: datetime) -> FactKind:
    """Plan, preference, event or fact, from a rewritten third-person sentence and its date."""
    future_date = date is not None and date.value.date() > at.date()
    # "in January" said on 20 January holds now: a plan if the sentence says one, not a past.
    month_start = at.date().replace(day=1)
    this_month = date is not None and date.granularity == "month" and date.value.date() == month_start
    past_date = date is not None and date.value.date() < at.date() and not this_month
    if future_date or (_PLAN.search(text) and not past_date):
        return "plan"
    if _PREFERENCE.search(text):
        return "preference"
    if (date is not None and _PAST_ACTION.search(text)) or _main_verb_is_past(text, subject):
        return "event"
    return "fact"


_VERB_AFTER_SUBJECT = re.compile(rf"(?: and others)?\s+(?:(?:{_ADVERBS})\s+)*([a-z]+)", re.IGNORECASE)


def _main_verb_is_past(text: str, subject: str) -> bool:
    if not text.startswith(subject):
        return False
    m = _VERB_AFTER_SUBJECT.match(text, len(subject))
    if m is None:
        return False
    word = m.group(1).lower()
    if word in ("was", "were", "had", "felt", "thought", "knew", "used") or word in _PRESENT_IN_ED:
        return False
    return word in _PAST_FORMS or word.endswith("ed")


# Verbs whose present ends in "ed": "I need" is no past ("Ann need to walk less" was written).
_PRESENT_IN_ED = _words("need feed bleed breed heed speed seed proceed succeed exceed embed shred")


def _third_singular(verb: str) -> str:
    if "-" in verb:  # "co-parent", "re-watch": the last part is the verb
        head, _, last = verb.rpartition("-")
        return f"{head}-{_third_singular(last)}"
    v = verb.lower()
    special = {"have": "has", "do": "does", "go": "goes", "be": "is", "am": "is", "don't": "doesn't",
               "wanna": "wants to", "gotta": "has to"}  # fmt: skip
    if v in special:
        return special[v]
    if not v.isalpha() or v in _MODALS or v in _PAST_FORMS or (v.endswith("ed") and v not in _PRESENT_IN_ED):
        return verb
    if v.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if len(v) > 2 and v.endswith("y") and v[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _past(verb: str) -> str:
    v = verb.lower()
    if v in _IRREGULAR_PAST:
        return _IRREGULAR_PAST[v]
    if v.endswith("e"):
        return v + "d"
    if len(v) > 2 and v.endswith("y") and v[-2] not in "aeiou":
        return v[:-1] + "ied"
    return v + "ed"


_FIRST_PERSON_FORMS = {
    "i'm": "S is", "i am": "S is", "i've": "S has", "i have": "S has", "i'll": "S will", "i'd": "S would",
    "i was": "S was", "i don't": "S doesn't", "i do not": "S does not", "i wanna": "S wants to",
    "i gotta": "S has to", "my": "S's", "mine": "S's", "me": "S", "myself": "themselves",
}  # fmt: skip
# "Mia and I" is a plural subject: its verb is not conjugated for the speaker alone.
_JOINT_SUBJECT = re.compile(r"[^,;\s]\s+(?:and|&)\s+$")  # ", and I love it" joins two clauses
_JOINT_FORMS = {
    "i'm": "S are", "i am": "S are", "i've": "S have", "i have": "S have", "i was": "S were",
    "i don't": "S don't", "i do not": "S do not",
}  # fmt: skip
# One pass: fixed forms first, then "I (adverbs) verb" with the verb conjugated, then a bare "I".
_FP_REWRITE = re.compile(
    r"\b(?P<had>i'd)(?=\s+(?:been|had|gone|done|never|already|just|seen|made|taken|met|heard)\b)"
    r"|\b(?P<fixed>i'm|i am|i've|i have|i'll|i'd|i was|i don't|i do not|i wanna|i gotta|my|mine|myself"
    r"|me(?!-))\b"
    rf"|\bi(?P<adv>(?:\s+(?:{_ADVERBS}))*)\s+(?P<verb>[a-z']+(?:-[a-z]+)*)|\bi\b",
    re.IGNORECASE,
)
_WE_FORMS = {
    "we're": "S and others are", "we've": "S and others have", "we'll": "S and others will",
    "we'd": "S and others would", "we": "S and others", "ourselves": "themselves",
}  # fmt: skip
_WE_REWRITE = re.compile(r"\b(?:we're|we've|we'll|we'd|we|our|ours|us|ourselves)\b", re.IGNORECASE)
_HAS_WE = re.compile(r"\bwe(?:'re|'ve|'ll|'d)?\b", re.IGNORECASE)
_YOU_FORMS = {
    "you're": "O is", "you are": "O is", "you've": "O has", "you have": "O has", "you'll": "O will",
    "you'd": "O would", "you were": "O was", "your": "O's", "yours": "O's", "yourself": "themselves",
}  # fmt: skip
_YOU_REWRITE = re.compile(
    r"\b(?P<fixed>you're|you are|you've|you have|you'll|you'd|you were|your|yours|yourself)\b"
    rf"|\byou(?P<adv>(?:\s+(?:{_ADVERBS}))*)\s+(?P<verb>[a-z']+)|\byou\b",
    re.IGNORECASE,
)
_FRAGMENT_VERB = re.compile(r"^(\S+)\s+(love|hope|need|miss|wish|wanna|gotta)\b")


def _third_person(text: str, speaker: str, other: str | None) -> str:
    """Rewrite first person to the speaker's name, and "you" to the other participant when known."""

    def first_person(m: re.Match[str]) -> str:
        if m.group("had"):
            return f"{speaker} had"
        fixed = m.group("fixed")
        joint = _JOINT_SUBJECT.search(text, 0, m.start()) is not None  # "Mia and I have": plural
        if fixed:
            form = " ".join(fixed.lower().split())
            if joint and form in _JOINT_FORMS:
                return _JOINT_FORMS[form].replace("S", speaker)
            return _FIRST_PERSON_FORMS[form].replace("S", speaker)
        verb = m.group("verb")
        if verb:
            return f"{speaker}{m.group('adv')} {verb if joint else _third_singular(verb)}"
        return speaker

    text = _FP_REWRITE.sub(first_person, text)
    low = text.lower()
    if "we" in low or "our" in low or "us" in low:
        # "We" is the speaker and people we cannot name; "our" reads as theirs after "we" is
        # rewritten, as the speaker's before it ("Our move fell through, we're staying": not
        # "Their move").
        has_we = bool(_HAS_WE.search(text))

        def first_plural(m: re.Match[str]) -> str:
            word = m.group(0).lower()
            if word in ("our", "ours"):
                we_before = bool(_HAS_WE.search(text, 0, m.start()))
                return ("their" if word == "our" else "theirs") if we_before else f"{speaker}'s"
            if word == "us":
                return "them" if has_we else speaker
            return _WE_FORMS[word].replace("S", speaker)

        text = _WE_REWRITE.sub(first_plural, text)
    if other and "you" in low:

        def second_person(m: re.Match[str]) -> str:
            fixed = m.group("fixed")
            if fixed:
                return _YOU_FORMS[" ".join(fixed.lower().split())].replace("O", other)
            verb = m.group("verb")
            if verb:
                # "you" is the subject at the start or before a common verb; else it is an object.
                subject = m.start() == 0 or verb.lower() in _COMMON_VERBS
                return f"{other}{m.group('adv')} {_third_singular(verb) if subject else verb}"
            return other

        text = _YOU_REWRITE.sub(second_person, text)
    # Fragments like "Caroline love the tattoo" get their verb agreement here.
    if text.startswith(speaker):
        text = _FRAGMENT_VERB.sub(lambda m: f"{m.group(1)} {_third_singular(m.group(2))}", text, count=1)
        # "Kim lives in Austin and work at Dell": the second verb is the speaker's too (not after
        # "to": "Kim wants to travel and see Rome").
        second = _SECOND_VERB.match(text, len(speaker))
        if second and " to " not in second.group("between"):
            text = text[: second.start("v")] + _third_singular(second.group("v")) + text[second.end("v") :]
    return text


_SECOND_VERB = re.compile(
    rf" (?:\w+ )?\w+s\b(?P<between>[^,.;!?]*?) and (?P<v>{'|'.join(sorted(_COMMON_VERBS))})\b(?= )"
)


def _polish(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip(" ,;:-–—")
    text = re.sub(r"\s+([,.!?])", r"\1", text)
    text = text.rstrip(" .!…,")
    return capitalised(text)


# "User is 34": an age, though it says it with a number alone.
_AGE_STATED = re.compile(rf"^\s+(?:(?:just|recently|now)\s+)*{AGE}")


def _has_content(text: str, subject: str) -> bool:
    """Whether a word says something beyond the subject, auxiliaries, feelings and praise."""
    subject_words = set(subject.lower().split())
    for w in _CONTENT_WORD.findall(text.lower()):
        w = w.removesuffix("'s")
        if w not in _STOP and w not in subject_words and w != "others":
            return True
    return False


_CONTENT_WORD = re.compile(r"[a-z][a-z'+&-]*")
# A reply to what was just said, about "it" or "that" and nothing more: "That is great, I love it!",
# "I think that's a great idea.", "Sounds good, I'll try that tomorrow." state no fact of their own.
_DEICTIC = re.compile(r"\b(?:that|this)\b", re.IGNORECASE)  # "Ann loved it" after its trip stays
_REACTION_WORDS = _words(
    "love loves loved like likes liked enjoy enjoys think thinks thought try tries tried agree agrees "
    "sound sounds good great nice cool awesome amazing perfect fun idea ideas plan definitely totally "
    f"really will give shot do does did check out look looks into {MONTH_NAMES} {WEEKDAY_NAMES} "
    "today tomorrow tonight later soon"
)


def _only_a_reaction(text: str, subject: str) -> bool:
    if not _DEICTIC.search(text):
        return False
    subject_words = set(subject.lower().split())
    words = {w.removesuffix("'s") for w in _CONTENT_WORD.findall(text.lower())}
    return words - _STOP - subject_words - {"it", "that", "this", "others"} <= _REACTION_WORDS


# An intention about "it" and nothing more ("Ann wants to get it up", "Ann needs to fix it"): what
# "it" is was said before, and the fact alone tells nothing. A date keeps it ("will do it on Friday").
_INTENTION_OF_IT = re.compile(
    r"^\s+(?:wants|needs|has|have|is going|are going|is gonna|plans|hopes|would like|'d like|will|can|should"
    r"|must|might|may)\s+(?:to\s+)?(?:(?!enjoy|love|like|hate|miss)[\w'-]+\s+){0,2}it"
    r"(?:\s+(?:up|out|down|off|back|done|again|first|soon|later|now|working))?\s*[.!]*$",
    re.IGNORECASE,
)


def _an_intention_of_it(text: str, subject: str) -> bool:
    written = as_written(subject, text) or ""
    return bool(written) and text.startswith(written) and bool(_INTENTION_OF_IT.match(text[len(written) :]))


# What may open an order without being part of it: "OK, you can stop…", "Actually, please…".
_ORDER_LEAD = r"(?:(?:ok|okay|alright|actually|also|so|and|oh|hey),? )*"
# A standing instruction with the requests it governs: "Always cite sources when I ask about
# history", "Never use jargon whenever I ask for explanations", "When I ask about taxes, always
# give the year". Only the conditional form: "Always happy to help!" is small talk, not an order.
_INSTRUCTION_AFTER = re.compile(
    rf"^{_ORDER_LEAD}(?:please,? )?(?P<directive>(?:always|never|don't|do not)\b.+?),?"
    r" when(?:ever)? i ask(?: you)? (?P<about>about|for) (?P<topic>[^,;]+?)[.!]*$",
    re.IGNORECASE,
)


# One for every request: an order to the assistant about how it answers ("Please always answer in
# Spanish", "From now on, keep your answers short", "Never use emojis"); "Always happy to help!"
# orders nothing.
_ANSWER_VERBS = (
    r"answer|reply|respond|use|write|call|address|include|add|give|keep|format|speak|talk|mention|say|ask"
    r"|suggest|recommend|explain|start|end|sign|show|list|put|translate|refer|assume|bring|be|cite|avoid"
)
# An order taken back is an order too ("Please stop answering in Spanish", "You don't need to
# answer in Spanish anymore"): it replaces the one it takes back (`consolidation.fact_slot`).
_STOP_VERBS = (
    r"answering|replying|responding|using|writing|calling|addressing|including|adding|giving|keeping"
    r"|formatting|speaking|talking|mentioning|saying|asking|suggesting|recommending|explaining|starting"
    r"|ending|signing|showing|listing|putting|translating|referring|assuming|bringing|being|citing"
)
# "When I ask about resumes, always use bullet points", and a change of it ("Actually, when I ask
# about resumes, use numbered lists instead"): after the requests named, any order to answer so.
_INSTRUCTION_BEFORE = re.compile(
    rf"^{_ORDER_LEAD}when(?:ever)? i ask(?: you)? (?P<about>about|for) (?P<topic>[^,;]+?), (?:please,? )?"
    rf"(?P<directive>(?:(?:always|never|don't|do not)\b|(?:{_ANSWER_VERBS})\b|stop (?:{_STOP_VERBS})\b).+?)"
    r"[.!]*$",
    re.IGNORECASE,
)
# An order for every request that names its requests at its end: "Stop using bullet points for my
# resume questions" is for resume questions.
_FOR_REQUESTS = re.compile(
    r"\s+(?:for|in|on|with|when answering)\s+(?:my\s+|the\s+)?(?P<topic>[\w'’ -]+?)\s+"
    r"(?:questions|requests|queries)$",
    re.IGNORECASE,
)
_INSTRUCTION_ALWAYS = re.compile(
    rf"^{_ORDER_LEAD}"
    r"(?:please,? )?(?:(?:from now on|going forward|in (?:the )?future),? )?(?:please,? )?"
    r"(?:(?:you (?:can|may|should) |just )(?=(?:call|address) me\b))?"
    rf"(?P<directive>(?:(?:always|never|don't|do not)\s+)?(?:{_ANSWER_VERBS})\b.+?"
    rf"|(?:you can )?stop (?:{_STOP_VERBS})\b.+?"
    rf"|(?:you )?(?:don't|do not|no) need to (?:{_ANSWER_VERBS})\b.+?)"
    r"(?:,? (?:from now on|going forward|please|now))?[.!]*$",
    re.IGNORECASE,
)
_ME = re.compile(r"\b(?:me|my|myself)\b", re.IGNORECASE)
_I_VERB = re.compile(r"\bI ([a-z]+)\b")
_FROM_NOW_ON = re.compile(
    r"\b(?:from now on|going forward|in (?:the )?future|always|never|need to)\b"
    # How the assistant answers at all, said as nothing more: "keep your answers short", "please be
    # more concise" ("be more concise in this email" is for the email).
    r"|^(?:please,? )?(?:keep|make) your (?:answers|responses|replies) (?:short|shorter|brief|briefer|concise"
    r"|simple|simpler)(?:,? please)?[.!]*$"
    r"|^(?:please,? )?be (?:more |a bit more )?(?:concise|brief|direct)(?:,? please)?[.!]*$"
    # What to call someone holds until they say otherwise: "Call me Ann", "You can call me Annie".
    r"|\b(?:call|address) me\b"
    rf"|^{_ORDER_LEAD}(?:please,? )?(?:don't|do not)\b"
    rf"|\bstop (?:{_STOP_VERBS})\b",
    re.I,
)


def _instruction(sentence: str, turn: Turn) -> ExtractedFact | None:
    """A standing instruction as a preference the requests it governs find (`applies_to`); one
    without requests named governs every request (`EVERY_REQUEST`)."""
    m = _INSTRUCTION_AFTER.match(sentence) or _INSTRUCTION_BEFORE.match(sentence)
    if m is not None:
        about, topic, directive = (
            m.group("about").lower(),
            m.group("topic").strip(),
            m.group("directive").strip(),
        )
    elif (always := _INSTRUCTION_ALWAYS.match(sentence)) and _FROM_NOW_ON.search(sentence):
        about, topic, directive = "about", EVERY_REQUEST, always.group("directive").strip()
        if scoped := _FOR_REQUESTS.search(directive):
            topic, directive = scoped.group("topic").strip(), directive[: scoped.start()]
    else:
        return None
    who = "the user" if _is_role_name(turn.speaker) else turn.speaker
    # "Call me Annie" is about the speaker, "your answers" about the assistant; "unless I say
    # otherwise" is the speaker's word.
    directive, topic = (
        _ME.sub(lambda m: f"{who}'s" if m.group(0).lower() == "my" else who, text)
        for text in (directive, topic)
    )
    directive = _I_VERB.sub(lambda m: f"{who} {_third_singular(m.group(1))}", directive)
    return ExtractedFact(
        content=instruction_sentence(who, about, topic, directive),
        kind="preference",
        subject=turn.speaker,
        source_message_ids=(turn.message_id,),
        valid_from=turn.event_at,
        confidence=0.9,
        importance=0.7,
        applies_to=topic,
    )


# Function words of English, and of the languages most often mixed into English chats. The rules
# read English: "Hola, me llamo Lucía y vivo en Sevilla" became "Hola, Lucía llamo Lucía y vivo en
# Sevilla" ("me" read as the English pronoun). A sentence with two of the others and none of
# English's states no fact here; its turn is still stored and searched.
_ENGLISH_FUNCTION_WORDS = _words(
    "i i'm i've i'd i'll my we our you your he she his her it its they their the is am are was were "
    "be been have has had do did to of and for with that this at on not but so"
)
_OTHER_FUNCTION_WORDS = _words(
    "y el la los las que de del al en es un una por para con porque pero muy le les et est je tu "
    "nous vous avec pour dans une des du ich und der die das ist nicht mit ein eine auf sie wir il "
    "di che non sono per della o não com uma "
    # Pronouns and first-person verbs that open what people say of themselves ("Me llamo Lucía",
    # "Je m'appelle Marie", "Ich heiße Jan"): English has none of them as a word of its own.
    "me te se mi llamo soy estoy tengo m'appelle suis j'habite heiße wohne chiamo abito chamo moro"
)
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")  # sentences come `_normalise`d: one apostrophe


def _in_another_language(sentence: str) -> bool:
    words = {w.lower() for w in _WORD.findall(sentence)}
    return len(words & _OTHER_FUNCTION_WORDS) >= 2 and not words & _ENGLISH_FUNCTION_WORDS


def _is_role_name(speaker: str) -> bool:
    return speaker.lower() in ("user", "assistant", "system", "tool")


def _is_unnamed_assistant(turn: Turn) -> bool:
    # What an unnamed assistant says about itself is no memory about anyone.
    return turn.role == "assistant" and turn.speaker.lower() == "assistant"


# -- entities and relations -----------------------------------------------------------------------

_REL_PATTERN = re.compile(
    r"(?P<verb>"
    + "|".join(re.escape(v) for v in sorted(_REL_VERBS, key=len, reverse=True))
    + rf")\s+(?P<rest>(?:{_TITLE})?[^.!?;]+)"
)
_AUX_ADV_CHAIN = re.compile(rf"^(?:\s*(?:{_ADVERBS}|has|had|have|just|also|finally|and|then))*\s*$", re.I)


# "got married", "got promoted", "got sick": a change of state, not a thing got.
_GOT_A_STATE = re.compile(r"[a-z]+(?:ed|en)|sick|better|worse|home|lost|ready|back|busy|tired|hurt|stuck")


def _someone_named(text: str, subject: str) -> list[tuple[str, str, str]]:
    """(owner, kin, name) for each someone named in a fact: "Ann's sister Lena" is Ann's; "a son
    named Max" is of the last someone named before it ("Ann's sister Lena has a son named Max":
    Lena's son), else of the subject."""
    found: list[tuple[int, str, str, str]] = []
    for m in (*_KIN_NAME.finditer(text), *_KIN_IS_NAME.finditer(text)):  # "Ann's manager is Dana" too
        whose = m.group(0).split()[0]
        owner = subject if whose.lower() == "my" else whose.removesuffix("'s")
        found.append((m.start(), owner, m.group(1).lower(), m.group(2)))
    for m in _NAMED.finditer(text):
        before = [name for start, _, _, name in found if start < m.start()]
        found.append((m.start(), before[-1] if before else subject, m.group(1).lower(), m.group(2)))
    return [(owner, kin, name) for _, owner, kin, name in sorted(found) if name not in _PERSON_STOP]


def _relations(text: str, subject: str, names: set[str]) -> list[tuple[str, str, EntityType]]:
    """(predicate, object, object type) for each "subject VERB object" in a rewritten fact, and
    the couple a fact names ("Mia and Ann got married": Ann married Mia)."""
    out: list[tuple[str, str, EntityType]] = []
    subject = as_written(subject, text) or subject  # "User works at Google", the speaker "user"
    couple = COUPLE.match(text)
    if couple and couple.group("subject") == subject:
        out.append((_COUPLE_PREDICATE[couple.group("state").lower()], couple.group("other"), "person"))
    for m in _REL_PATTERN.finditer(text):
        before = text[: m.start()]
        # The verb must belong to the subject: right after it, or after "and" in the same sentence.
        tail = before[len(subject) :] if before.startswith(subject) else None
        if tail is None:
            continue
        if not (_AUX_ADV_CHAIN.match(tail) or re.search(r"\band\s*$", tail)):
            continue
        predicate = _REL_VERBS[m.group("verb")]
        obj = _noun_phrase(m.group("rest"))
        if obj is None or (predicate == "got" and _GOT_A_STATE.fullmatch(obj)):
            continue
        etype = _np_type(obj, predicate, names)
        if predicate == "joined" and re.match(rf"{re.escape(obj)}\s+as\s", m.group("rest")):
            etype = "organization"  # "joined Vercel as a staff engineer": an employer
        out.append((predicate, obj, etype))
    return out


def _noun_phrase(rest: str) -> str | None:
    tokens = re.findall(r"[^\W_][\w'+&-]*|[^\w\s]", rest)  # a word opens with any letter or digit
    i = 0
    while i < len(tokens) and (
        tokens[i].lower() in _NP_DETERMINERS
        or tokens[i] in _NP_ADJ_SKIP  # lower case only: "New York" is a name, not a new York
        or tokens[i].endswith("'s")
        or tokens[i].lower() in ("of", "two", "three")
    ):
        i += 1
    words: list[str] = []
    for tok in tokens[i:]:
        low = tok.lower()
        titled = len(words) == 1 and words[0] in _TITLE_WORDS  # "St. Luke's Hospital", "Dr. Patel"
        if titled and tok == "." and not words[0].endswith("."):
            words[0] += "."
            continue
        if not tok[0].isalnum() or low in _NP_STOP or len(words) >= 5:
            break
        if words and (low in _NP_DETERMINERS or (low.endswith("'s") and not words[-1].endswith("."))):
            break
        words.append(tok)
    if not words or words[0].lower() in _NON_VERB_START:
        return None
    nxt = tokens[i + len(words)] if i + len(words) < len(tokens) else ""
    first_low = words[0].lower()
    if first_low.endswith("ing") and (
        nxt.lower() in _NP_DETERMINERS or nxt.endswith("'s") or any(w[0].isupper() for w in words[1:])
    ):
        return None  # "loves running Jon's own studio" is a verb phrase, not a thing
    np = " ".join(words)
    if np.lower() in _GENERIC_NP or np.lower() in _STOP or first_low in _SOMEONE:
        return None  # "dating someone new" names no one
    return np


def _np_type(np: str, predicate: str, names: set[str]) -> EntityType:
    head = np.split()[-1].lower()
    if predicate == "works_at":
        return "organization"
    if np in names or predicate in _REL_PERSON:
        return "person" if predicate in _REL_PERSON else "place" if predicate in _REL_PLACE else "other"
    if head in _ORG_HEADS:
        return "organization"
    if head in _EVENT_HEADS:
        return "event"
    if head in _PLACE_HEADS or (predicate in _REL_PLACE and np[0].isupper()):
        return "place"
    return "thing"


_PERSON_CONTEXT = re.compile(
    rf"\b(?:{KIN}|named|called|dating|dated|married|marry|marrying|engaged\s+to|divorced|kissed|hugged"
    r"|texted|met|meet|meeting|(?:hang|hung|hanging)\s+out\s+with|broke\s+up\s+with|(?:me|i)\s+(?:and|&)"
    r"|(?:live|lives|lived|living)\s+with)\s*$"
)
# "Mia and I": a name beside the speaker is a person.
_PERSON_AFTER = re.compile(r"\s+(?:and|&)\s+(?:I|me)\b")
# Languages, tools and platforms are things, whatever "in" or "at" comes before them ("I code in
# Python" made Python a place).
_TECH_NAMES = _words(
    "python rust java javascript typescript kotlin swift ruby haskell scala elixir perl php golang go sql "
    "html css react vue angular svelte django flask rails docker kubernetes linux windows macos ios android "
    "excel photoshop figma unity blender matlab tableau notion slack"
)
_ORG_CONTEXT = re.compile(
    r"\b(?:job|work|works|worked|working|intern|internship|employed|engineer|developer|designer|manager"
    r"|analyst|scientist|consultant|researcher|director)\s+(?:at|for)\s*$"
)
_PLACE_CONTEXT = re.compile(
    r"(?:country|city|town|state),?\s*$|\b(?:in|to|from|at|visited|visit|near|around|across)\s*$"
)


def _name_type(name: str, before: str, after: str, names: set[str], speakers: set[str]) -> EntityType:
    head = name.split()[-1].lower()
    if name in speakers:
        return "person"
    if name.lower() in _TECH_NAMES:
        return "thing"
    if name.startswith(_PERSON_TITLES):
        return "person"
    if name.startswith(("Mt.", "Ft.")):
        return "place"
    if " " not in name and _PERSON_AFTER.match(after):
        return "person"
    if head in _ORG_HEADS or _ORG_CONTEXT.search(before):
        return "organization"
    if head in _PLACE_HEADS or _PLACE_CONTEXT.search(before):
        return "place"
    if head in _EVENT_HEADS:
        return "event"
    if " " not in name and _PERSON_CONTEXT.search(before):
        return "person"
    return "other"


def _strip_article(name: str) -> str:
    words = name.strip(" .,!?\"'").split()
    while words and words[0].lower() in _ARTICLE_WORDS:
        words.pop(0)
    out = " ".join(words)
    return out.removesuffix("'s")


def _entity_key(name: str) -> str:
    """The form two mentions must share to be one entity: case, articles and possessives ignored."""
    words = re.sub(r"[^\w\s+&'-]", " ", name.lower()).split()
    while words and (words[0] in _NP_DETERMINERS or (words[0].endswith("'s") and len(words) > 1)):
        words.pop(0)
    key = " ".join(words).removesuffix("'s")
    return key


_NOT_IN_NAMES = re.compile(r"[^\w\s+&'-]")


def _name_form(text: str) -> str:
    """Text as `_entity_key` writes names: lower case, straight apostrophes, other punctuation and
    runs of space as one space ("Dr. Smith's" -> "dr smith's")."""
    return " ".join(_NOT_IN_NAMES.sub(" ", _normalise(text).lower()).split())


def name_sources(entities: Sequence[ExtractedEntity], turns: Sequence[Turn]) -> list[ExtractedEntity]:
    """The entities with their sources set to exactly the turns whose text names them or one of
    their aliases, in turn order (whatever sources an extractor gave: an LLM's or a pattern's)."""
    forms = [(t.message_id, _name_form(t.text)) for t in turns]
    out = []
    for e in entities:
        keys = {k for k in (_entity_key(_normalise(n)) for n in (e.name, *e.aliases)) if k}
        ids = tuple(message_id for message_id, form in forms if any(_found(form, key) for key in keys))
        out.append(replace(e, source_message_ids=ids))
    return out


def _found(form: str, key: str) -> bool:
    i = form.find(key)
    while i >= 0:
        if _word_at(form, i, len(key)):
            return True
        i = form.find(key, i + 1)
    return False


def _word_at(text: str, i: int, n: int) -> bool:
    before = text[i - 1] if i > 0 else " "
    after = text[i + n] if i + n < len(text) else " "
    return not before.isalnum() and not after.isalnum()
