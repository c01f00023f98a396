"""Seeded, offline generators for the synthetic fine-tuning corpora: DTC ad copy, Alpaca-style instructions, weather
bulletins and recipes.

Why this exists: the adapter experiments LoRA-fine-tune small language models (SmolLM2-135M, Gemma-3-270M) on a
"commercial ad copy" corpus and on an "instruction following" corpus, then measure what the adapter changed. The
machines that run the pipeline have no internet, and third-party text (the Alpaca data set, scraped ads) must not be
committed to this repository, so every word here is produced by code and word lists written for this module. Users
with internet access who want real corpora (e.g. the Stanford Alpaca data) can load them through the corpus loaders
instead; these generators are the offline, reproducible default and need nothing but the standard library.

* :func:`generate_dtc_ads` composes direct-to-consumer ads from a small grammar: 17 product categories, each with its
  own products, materials, benefits, pains, features, audiences and price range; brand names built from morphemes;
  ten layouts (headline + paragraph, bullets, email, landing page, social caption, FAQ, testimonial-led, comparison,
  founder story, product listing) whose sections are optional and shuffled.
* :func:`generate_instructions` renders 27 task families (``INSTRUCTION_FAMILIES``) in the exact Alpaca prompt
  format, several phrasings each. Every answer is correct by construction: arithmetic is computed, lists are sorted by
  ``sorted``, explanations and yes/no facts come from a hand-written bank of 34 topics and 28 facts.

* :func:`generate_weather` writes bulletins for an invented country in seven layouts (national forecast, shipping
  forecast, weather warning, multi-day outlook, broadcast script, monthly climate summary, mountain forecast); the
  numbers agree within a bulletin (lows below highs, gusts above mean winds, rain chances that match the sky).
* :func:`generate_recipes` crosses 9 savoury dish families with 32 main ingredients and 16 flavour profiles, plus 5
  baking families, in four layouts (card, blog intro, cookbook prose, variations and storage), one measuring system
  per recipe (metric, metric with ounces, or US cups and pounds).

All are deterministic in ``(n, seed)``, draw every document from one ``random.Random(seed)`` stream (so a shorter
call returns a prefix of a longer one) and never return the same document twice.
"""

from __future__ import annotations

import json
import random
import re
from typing import Callable

__all__ = ["generate_dtc_ads", "generate_instructions", "generate_weather", "generate_recipes", "GENERATORS",
           "INSTRUCTION_FAMILIES"]

_MAX_MISSES = 5000  # consecutive duplicate draws before giving up


def _check_args(n: object, seed: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__} ({n!r})")
    if n <= 0:
        raise ValueError(f"n must be a positive number of documents, got {n}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")


def _collect(n: int, seed: int, make: Callable[[random.Random], tuple[str, str]], what: str) -> list[tuple[str, str]]:
    """Draw ``(tag, doc)`` pairs one by one from one RNG stream, skipping duplicates (so prefixes are stable)."""
    _check_args(n, seed)
    rng, seen, out, misses = random.Random(seed), set(), [], 0
    while len(out) < n:
        tag, doc = make(rng)
        if doc in seen:
            misses += 1
            if misses > _MAX_MISSES:
                raise ValueError(f"could only generate {len(out)} distinct {what} documents (asked for {n}): "
                                 f"{_MAX_MISSES} draws in a row were duplicates")
            continue
        seen.add(doc)
        out.append((tag, doc))
        misses = 0
    return out


def _s(text: str) -> list[str]:
    return [x.strip() for x in text.split("|")]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _bare(s: str) -> str:
    return re.sub(r"^(a|an|the) ", "", s)


_AN = re.compile(r"\b([Aa]) (?=(?!one|uni|use|usb|eu)[aeiou])", re.I)

# ----------------------------------------------------------------------------------------------- DTC ads: data
# Per category: n nouns (singular/plural), l product lines, a adjectives, m materials/ingredients, b benefits (3rd
# person verb phrases), p pains, f features, w audiences, u usage occasions, x "free from", t hashtags, $ price range.
_CAT_TEXT = """
@sneakers ; $: 65-160 ; t: sneakers|runningshoes|sustainablefashion|shoegame|everydaystyle
n: sneaker/sneakers|running shoe/running shoes|everyday trainer/everyday trainers|slip-on/slip-ons ; l: Cloud Runner|Daily Trainer|Drift Low|Pacer|Roam|Glide 2|Street Knit|Tempo
a: lightweight|breathable|cushioned|springy|washable|featherlight ; m: merino wool|recycled ocean plastic|natural rubber soles|sugarcane-based foam|castor bean oil insoles|a tree fiber knit|vegan suede
b: keeps your feet cool on hot days|feels broken-in from the first wear|absorbs impact mile after mile|goes straight into the washing machine|weighs less than a banana|never pinches at the toe|gives back energy with every stride
p: blisters|sore arches|sweaty feet|shoes that fall apart after one season|stiff soles|heel slip ; f: a cushioned heel cup|machine-washable uppers|a grippy outsole|a roomy toe box|reflective heel tabs|no-tie elastic laces
w: runners|commuters|nurses|weekend hikers|teachers|people who are on their feet all day ; u: on your morning run|on a long commute|at the office|on weekend trails|on a ten-hour shift
@skincare ; $: 24-78 ; t: skincare|selfcare|glowingskin|skincareroutine|cleanbeauty ; x: parabens|sulfates|synthetic fragrance|mineral oil
n: serum/serums|moisturizer/moisturizers|face oil/face oils|cleanser/cleansers|night cream/night creams|eye cream/eye creams ; l: Daily Glow|Barrier Repair|Dew Drop|Overnight Reset|Calm Cloud|Bright Start
a: lightweight|fragrance-free|gentle|hydrating|non-greasy|dermatologist-tested ; m: hyaluronic acid|niacinamide|squalane|ceramides|vitamin C|cold-pressed rosehip oil|oat extract|green tea extract
b: sinks in within seconds|leaves your skin soft without feeling greasy|calms redness overnight|plays nicely under makeup|locks in moisture for 24 hours|brightens dull skin in two weeks|works for even the most sensitive skin
p: dry patches|breakouts|a 12-step routine|dull skin|tight, flaky skin|products that sting ; f: an airless pump that keeps the formula fresh|a recyclable glass bottle|a silky gel texture|a dropper that measures the perfect amount|a travel-size option
w: busy parents|people with sensitive skin|skincare minimalists|frequent flyers|skincare fans over thirty ; u: in your morning routine|before bed|after a long flight|under sunscreen|after the gym
@coffee ; $: 14-32 ; t: coffee|coffeelover|morningritual|specialtycoffee|butfirstcoffee
n: blend/blends|single-origin roast/single-origin roasts|bag of beans/bags of beans|house roast/house roasts|espresso roast/espresso roasts ; l: Morning Ritual|Night Owl|Dark Harbor|Sunrise Blend|Highland Roast|Velvet Espresso
a: smooth|small-batch|bold|freshly roasted|low-acid|ethically sourced ; m: Colombian beans|Ethiopian beans|beans from a Guatemalan family farm|Brazilian beans|notes of dark chocolate|hints of cherry|caramel sweetness
b: is roasted the week it ships|tastes smooth even without milk|never turns bitter|brews beautifully in any machine|stays fresh for weeks in its resealable bag|pays farmers well above fair-trade prices
p: burnt supermarket coffee|stale beans|a bitter aftertaste|the afternoon slump|seven-dollar lattes ; f: a one-way valve bag|a roast date on every bag|whole-bean or ground options|flexible delivery every two to six weeks
w: home baristas|early risers|remote workers|espresso lovers|night-shift workers ; u: in a French press|over ice|in your espresso machine|in a pour-over|in a drip machine
@mattresses ; $: 499-1899 ; t: sleep|bettersleep|mattress|bedroomgoals|sleepwell
n: mattress/mattresses|hybrid mattress/hybrid mattresses|memory foam mattress/memory foam mattresses ; l: Cloud Hybrid|Original|Deep Sleep|Cool Rest|Luxe Firm|Essential
a: supportive|cooling|pressure-relieving|plush|medium-firm|breathable ; m: cooling gel foam|individually wrapped coils|organic cotton|natural latex|New Zealand wool|zoned support foam
b: sleeps cool all night long|relieves pressure on your hips and shoulders|keeps your spine aligned|stops motion transfer, so you won't feel your partner move|arrives in a box and sets up in minutes|holds its shape for years
p: tossing and turning|back pain|waking up hot|a sagging middle|feeling every move your partner makes ; f: a removable, washable cover|reinforced edges|seven zones of support|a breathable top layer
w: side sleepers|back sleepers|hot sleepers|couples|light sleepers ; u: in the guest room|on a platform bed|in a kid's room|in your first apartment
@supplements ; $: 25-69 ; t: wellness|healthyhabits|supplements|dailyroutine|selfcare ; x: gluten|soy|artificial colors|added sugar
n: daily multivitamin/daily multivitamins|daily supplement/daily supplements|wellness blend/wellness blends|greens powder/greens powders ; l: Daily Foundation|Calm Night|Gut Reset|Green Boost|Core Essentials|Active Daily
a: third-party tested|vegan|easy-to-swallow|clean|science-backed|travel-friendly ; m: magnesium glycinate|vitamin D3|methylated B12|ashwagandha|ten probiotic strains|organic spirulina|zinc and vitamin C
b: covers the nutrients most diets miss|mixes into water without clumping|fits into your morning in ten seconds|is tested by an independent lab|tastes like actual citrus|comes in a refillable glass jar
p: a cabinet full of half-empty bottles|chalky pills|mystery fillers|afternoon crashes|artificial aftertastes ; f: a 30-day supply in every jar|a compostable refill pouch|a QR code linking to lab results|pre-portioned travel packs
w: busy professionals|new parents|athletes|people over fifty|plant-based eaters ; u: with breakfast|after a workout|before bed|on the go
@headphones ; $: 59-299 ; t: audio|headphones|music|techgadgets|wfh
n: pair of headphones/pairs of headphones|set of wireless earbuds/sets of wireless earbuds|noise-cancelling headset/noise-cancelling headsets ; l: Pulse Pro|Quiet One|Loop Buds|Studio 2|Echo Lite|Wave ANC
a: wireless|noise-cancelling|lightweight|sweat-resistant|studio-grade|foldable ; m: memory foam ear cushions|an aluminum frame|40 mm drivers|recycled plastics|a vegan leather headband
b: blocks out the noise of a busy train|lasts 40 hours on a single charge|pairs with your phone in one tap|stays put through the toughest workouts|delivers deep bass without distortion|gives you two hours of listening from a five-minute charge
p: tangled cables|earbuds that fall out|dead batteries mid-flight|muddy sound|sore ears after an hour ; f: multipoint Bluetooth|a transparency mode|USB-C fast charging|a compact travel case|IPX5 sweat resistance
w: commuters|gamers|podcast lovers|frequent flyers|students ; u: on the train|at the gym|on long flights|in an open-plan office
@pet food ; $: 29-89 ; t: dogsofinstagram|petfood|doglife|dogmom|healthypets ; x: corn|wheat|artificial preservatives|by-product meals
n: fresh dog food recipe/fresh dog food recipes|dog food/dog foods|meal plan for dogs/meal plans for dogs ; l: Chicken Feast|Salmon Supper|Turkey Harvest|Beef Bowl|Puppy Start|Senior Vitality
a: vet-formulated|human-grade|fresh|high-protein|gently cooked|nutritious ; m: real chicken|wild-caught salmon|sweet potato|pumpkin|blueberries|omega-3 fatty acids|brown rice
b: arrives pre-portioned to your pet's exact needs|supports healthy digestion|keeps coats shiny|is gently cooked in small batches|wins over even the pickiest eaters|ships frozen in recyclable packaging
p: mystery meat|itchy skin|upset stomachs|picky eating|hauling heavy bags from the store ; f: personalized portions|a feeding guide on every pack|flexible delivery|compostable packaging
w: dog parents|owners of picky eaters|new puppy parents|families with senior dogs|busy dog owners ; u: at breakfast|as a topper on kibble|on road trips|as a training reward
@meal kits ; $: 49-119 ; t: mealkit|dinnerideas|homecooking|easyrecipes|foodie
n: meal kit/meal kits|dinner box/dinner boxes|recipe box/recipe boxes ; l: Family Plan|Weeknight Box|Veggie Box|Protein Plus|Quick Cook|Fit Plan
a: chef-designed|fresh|seasonal|family-friendly|plant-forward|pre-portioned ; m: farm-fresh vegetables|antibiotic-free chicken|sustainably caught fish|handmade sauces|seasonal produce|whole grains
b: gets dinner on the table in 20 minutes|cuts down on food waste|takes the guesswork out of grocery shopping|rotates 40 new recipes every week|lets you skip or pause any week|teaches you new skills one recipe at a time
p: the 6 p.m. "what's for dinner?" panic|wilted vegetables in the fridge|takeout every night|long grocery lines|wasted groceries ; f: step-by-step recipe cards|insulated, recyclable packaging|pre-measured ingredients|calorie and macro info on every recipe
w: busy families|new cooks|couples|health-conscious eaters|people who hate grocery shopping ; u: on busy weeknights|for date night|for Sunday meal prep|for the whole family
@luggage ; $: 145-495 ; t: travel|wanderlust|traveltips|packinglight|carryon
n: carry-on/carry-ons|checked suitcase/checked suitcases|spinner suitcase/spinner suitcases|carry-on suitcase/carry-on suitcases ; l: Carry-On Pro|Roller 22|Globetrotter|Voyager|Bigger Carry-On|Check-In Max
a: durable|lightweight|expandable|scratch-resistant|carry-on-sized|sleek ; m: a polycarbonate shell|aerospace-grade aluminum|water-resistant nylon|vegan leather trim|self-healing zippers|a recycled polyester lining
b: fits in almost every overhead bin|glides over cobblestones on 360-degree spinner wheels|charges your phone on the go|survives baggage handlers without a scratch|packs a week of clothes into a carry-on|keeps wrinkles out with built-in compression
p: broken wheels|overstuffed bags|surprise checked-bag fees|zippers that split|digging for your passport ; f: a built-in USB port|a TSA-approved lock|a padded laptop sleeve|a compression system|a removable laundry bag
w: frequent flyers|digital nomads|business travelers|families on the move|weekend adventurers ; u: on business trips|on a weekend getaway|on a two-week backpacking trip|on your next long-haul flight
@razors ; $: 9-75 ; t: shaving|grooming|selfcare|wetshaving|groomingroutine
n: razor/razors|shaving kit/shaving kits|safety razor/safety razors|starter razor set/starter razor sets ; l: Classic|Precision Five|Smooth Start|Sensitive Edge|Everyday Kit|The Weighted
a: close|smooth|weighted|ergonomic|refillable|irritation-free ; m: German steel blades|a weighted zinc handle|aloe vera|a lubricating strip with vitamin E|a brass handle|plant-based shave gel
b: gives a close shave without razor burn|glides over every curve|costs a fraction of drugstore refills|lasts for weeks between blade changes|rinses clean in one pass|delivers fresh blades straight to your door
p: razor burn|ingrown hairs|overpriced drugstore cartridges|nicks and cuts|dull blades ; f: a five-blade cartridge|a pivoting head|a magnetic stand|blade refills on your schedule|a travel cover
w: first-time shavers|people with sensitive skin|people tired of cartridge prices|daily shavers|frequent travelers ; u: in the shower|before a big meeting|on busy mornings|on the road
@candles ; $: 18-64 ; t: candles|cozyvibes|homedecor|selfcare|hygge ; x: paraffin|phthalates|lead
n: candle/candles|three-wick candle/three-wick candles|soy candle/soy candles|scented candle/scented candles ; l: Fireside|Sea Salt & Sage|Cedar Cabin|Fig & Amber|Linen Morning|Midnight Vanilla
a: hand-poured|clean-burning|cozy|long-lasting|small-batch|richly scented ; m: coconut-soy wax|cotton wicks|essential oils|notes of cedar and amber|a hand-thrown ceramic vessel|phthalate-free fragrance oils
b: burns evenly for up to 60 hours|fills a room without overwhelming it|is poured by hand in small batches|becomes a planter once it's done|never leaves black soot on your walls|makes your home smell like a weekend away
p: soot marks|headache-inducing fragrances|candles that tunnel|scents that vanish after an hour|overpriced "luxury" candles ; f: a reusable vessel|a dust lid|a 60-hour burn time|a wooden wick that crackles|gift-ready packaging
w: homebodies|gift-givers|book lovers|people who love a cozy night in|new homeowners ; u: during a long bath|on a rainy Sunday|at your dinner party|while you read
@athleisure ; $: 38-128 ; t: athleisure|activewear|gymstyle|ootd|yoga
n: pair of leggings/pairs of leggings|hoodie/hoodies|jogger/joggers|sports bra/sports bras|pair of training shorts/pairs of training shorts ; l: Everyday|Studio|Cloud|Flow|Move|Lounge
a: buttery-soft|squat-proof|sweat-wicking|stretchy|breathable|high-rise ; m: recycled nylon|organic cotton|a brushed fleece interior|Tencel|four-way stretch fabric|bamboo jersey
b: moves with you through every stretch|never goes see-through|stays put without constant tugging|goes from the gym to brunch without a second thought|wicks sweat during the hardest workouts|feels like a second skin
p: waistbands that roll down|see-through fabric|pilling after three washes|chafing|leggings that sag by lunchtime ; f: a hidden phone pocket|flatlock seams|a high-rise waistband|thumbholes|a drawcord waist
w: yoga lovers|runners|new moms|work-from-home professionals|weekend warriors ; u: at the studio|on a long walk|on the couch|at Saturday brunch
@water bottles ; $: 22-55 ; t: hydration|stayhydrated|reusable|plasticfree|hydrate
n: water bottle/water bottles|insulated tumbler/insulated tumblers|travel mug/travel mugs ; l: Summit|Everyday 24 oz|Trail Flask|Commuter Mug|Big Sip|Kids' Mini
a: insulated|leakproof|dishwasher-safe|BPA-free|rugged|double-walled ; m: 18/8 stainless steel|double-wall vacuum insulation|a powder-coated finish|a BPA-free lid|a medical-grade silicone seal
b: keeps drinks cold for 24 hours and hot for 12|never sweats on your desk|survives drops on concrete|fits in any car cup holder|cleans up in the dishwasher|replaces hundreds of plastic bottles a year
p: lukewarm water|leaky lids|single-use plastic|metallic aftertastes|rattling bottles in your bag ; f: a flip straw lid|a wide mouth for ice cubes|a carry loop|a leakproof lid|a swappable lid
w: hikers|students|gym-goers|commuters|busy parents ; u: on a long hike|at your desk|at the gym|on a road trip
@bedding ; $: 79-349 ; t: bedding|bedroomdecor|sleepwell|homedecor|cozyhome
n: sheet set/sheet sets|set of sheets/sets of sheets|bed sheet bundle/bed sheet bundles ; l: Percale Classic|Sateen Luxe|Linen Breeze|Cloud Duvet|Washed Cotton|Hotel Collection
a: breathable|silky|crisp|stonewashed|temperature-regulating|organic ; m: long-staple organic cotton|European flax linen|Tencel lyocell|long-staple Egyptian cotton|down-alternative fill|bamboo viscose
b: gets softer with every wash|keeps you cool on summer nights|resists pilling for years|feels like a five-star hotel bed|fits mattresses up to 16 inches deep|never slips off the corners
p: scratchy sheets|night sweats|fitted sheets that pop off|pilling|sheets that lose their softness after a month ; f: deep pockets|matching pillowcases|a 400 thread count weave|360-degree elastic|labeled short and long sides
w: hot sleepers|light sleepers|new homeowners|couples|people who love a well-made bed ; u: on hot summer nights|in the guest room|on lazy Sunday mornings|in a kid's room
@cookware ; $: 45-395 ; t: cookware|homecooking|kitchen|foodie|chefmode ; x: PFAS|PTFE|lead|cadmium
n: skillet/skillets|nonstick pan/nonstick pans|frying pan/frying pans|saute pan/saute pans ; l: Everyday Pan|Carbon Skillet|Weeknight Pan|Big Skillet|Saute Pan|Always Pan
a: nonstick|oven-safe|professional-grade|heavy-duty|induction-ready|toxin-free ; m: five-ply stainless steel|a ceramic nonstick coating|enameled cast iron|hand-forged carbon steel|an aluminum core|a walnut handle
b: heats evenly with no hot spots|goes from stovetop to oven to table|releases eggs without a drop of oil|cleans up in seconds|stays flat for life|works on gas, electric and induction
p: warped pans|flaking nonstick coatings|hot spots|scrubbing burnt-on food|cluttered cabinets ; f: a stay-cool handle|a flared rim for drip-free pouring|nesting storage|oven-safe lids|a tempered glass lid
w: home cooks|new cooks|professional chefs|busy families|first-time homeowners ; u: on busy weeknights|for Sunday roasts|at dinner parties|for weekend brunch
@eyewear ; $: 55-195 ; t: eyewear|sunglasses|style|summerstyle|glasses
n: pair of sunglasses/pairs of sunglasses|pair of polarized sunglasses/pairs of polarized sunglasses|pair of sport sunglasses/pairs of sport sunglasses ; l: Harbor|Maxwell|Coast|Reader One|Sundown|Atlas
a: polarized|lightweight|handcrafted|scratch-resistant|timeless|flexible ; m: Italian acetate|titanium hinges|polarized lenses|plant-based acetate|an anti-reflective coating|spring-loaded hinges
b: cuts glare on the brightest days|blocks 100% of UVA and UVB rays|sits comfortably all day without pinching|bends instead of breaking|looks good on almost every face shape|costs a fraction of designer frames
p: pinching nose pads|designer markups|squinting in the sun|scratched lenses|frames that slide down your nose ; f: a hard case and cleaning cloth|adjustable nose pads|prescription-ready lenses|a free virtual try-on
w: drivers|beachgoers|cyclists|skiers|anglers ; u: on road trips|at the beach|out on the water|on the ski slopes
@oral care ; $: 25-149 ; t: oralcare|smile|dentalcare|selfcare|zerowaste
n: electric toothbrush/electric toothbrushes|sonic toothbrush/sonic toothbrushes|rechargeable toothbrush/rechargeable toothbrushes ; l: Sonic One|Fresh Start|Travel Brush|Bright Smile|Gentle Clean|Daily Duo
a: sonic|rechargeable|travel-friendly|dentist-designed|gentle|whitening ; m: soft tapered bristles|a whisper-quiet motor|a recyclable aluminum handle|a long-lasting lithium battery|a compostable brush head
b: removes more plaque than a manual brush|runs for a month on a single charge|reminds you to change heads every three months|is gentle on sensitive gums|fits in any travel bag|lifts coffee stains in two weeks
p: bleeding gums|forgetting to replace brush heads|bulky chargers|coffee stains|brushes that die after a week ; f: a two-minute timer|a 30-second pacer|a travel case|a pressure sensor|automatic brush-head refills
w: coffee drinkers|frequent travelers|families|people with sensitive teeth|kids ; u: on business trips|in the morning rush|before date night|after your morning coffee
"""


def _parse_cats(text: str) -> dict[str, dict]:
    cats: dict[str, dict] = {}
    for block in text.strip().split("@")[1:]:
        name, *fields = re.split(r"\n| ; ", block.strip())
        d = {k: _s(v) for k, v in (f.split(": ", 1) for f in fields)}
        lo, hi = d["$"][0].split("-")
        d["$"], d["n"] = (int(lo), int(hi)), [tuple(x.split("/")) for x in d["n"]]
        cats[name] = d
    return cats


_CATS = _parse_cats(_CAT_TEXT)
_FEM = _s("Maya|Ana|Priya|Chloe|Sofia|Grace|Amara|Lena|Hannah|Olivia|Zoe|Nadia|Elena|Rosa|Keiko|Fatima|Julia|Emma|Leila|Ivy")
_MAS = _s("Liam|Noah|Omar|Mateo|Ethan|Kenji|Daniel|Samuel|Ravi|Lucas|Jonah|Marcus|Theo|Felix|Andre|David|Tomas|Arjun|Caleb|Owen")
_LAST = _s("Silva|Chen|Patel|Okafor|Novak|Garcia|Kim|Nguyen|Rossi|Murphy|Hughes|Schmidt|Tanaka|Haddad|Johansson|Reyes|"
           "Walker|Bennett|Moreau|Kowalski|Dubois|Mensah|Larsen|Ortiz")
_CITY_ST = _s("Austin, TX|Denver, CO|Portland, OR|Chicago, IL|Brooklyn, NY|Seattle, WA|Atlanta, GA|Minneapolis, MN|"
              "San Diego, CA|Nashville, TN|Toronto, ON|Manchester, UK|Melbourne, AU|Boston, MA|Phoenix, AZ|Raleigh, NC")
_B1 = _s("Nor|Ever|Kin|Lum|Oak|Hav|Wild|Mon|Tid|Emb|Sol|Vel|Jun|Mav|Ash|Bel|Cor|Dun|Fen|Gal|Hol|Kes|Lar|Mer|Nov|Pel|"
         "Quin|Ros|Sab|Tal|Ven|Wren|Yar|Zel|Bram|Cal|Dov|Ost")
_B2 = _s("a|o|ly|io|ara|en|is|ana|eo|ette|ix|um|ora|ine|ova")
_B3 = _s("Co.|Goods|Labs|Supply|House|Studio|Collective|Works")
_NAT = _s("Oak|Ember|Fern|Stone|River|Birch|Salt|Cedar|Moss|Harbor|Juniper|Willow|Field|Pine|Tide|Clay")
_NAT2 = _s("field|wood|stone|brook|ridge|well|crest|light|haven|grove|line|mark")


def _brand(r: random.Random) -> str:
    k = r.random()
    if k < 0.4:
        return r.choice(_B1) + r.choice(_B2)
    if k < 0.6:
        return f"{r.choice(_B1)}{r.choice(_B2)} {r.choice(_B3)}"
    if k < 0.8:
        a, b = r.sample(_NAT, 2)
        return f"{a} & {b}"
    return r.choice(_NAT) + r.choice(_NAT2)


# ----------------------------------------------------------------------------------------------- DTC ads: phrase banks
_HEAD = _s("Meet the {ns} that {b1}.|Finally, a {ns} that {b1}.|{A1}. {A2}. Seriously {a3}.|Say goodbye to {p1}."
           "|The last {ns} you'll ever need.|{np} for {w}.|We rebuilt the {ns} from scratch.|Better {np}. Fairer prices."
           "|The {ns} {w} can't stop talking about.|No more {p1}. Ever.|{line}: {a1} by design.|Introducing the {line}."
           "|{pct}% off sitewide. This weekend only.|Built for {w}. Loved by everyone.|Great {np} shouldn't cost ${old}."
           "|The {a1} {ns}, reimagined.|Everything you want in a {ns}. Nothing you don't.|What if your {ns} {b1}?"
           "|Your new favorite {ns} is here.|Made for {w}. Made to last.|Goodbye, {p1}. Hello, better {np}."
           "|Upgrade your routine with the {line}.|The {line} is back in stock.|{A1}, {a2} and ready when you are.")
_PAIN = _s("Most {np} are built for the shelf, not for real life, which is how you end up with {p1}.|Tired of {p1}? So were we."
           "|If you've ever dealt with {p1}, you know the struggle.|Let's be honest: {p1} and {p2} shouldn't be part of the deal."
           "|We put up with {p1} for years. Then we decided to fix it.|{p1}? Not on our watch.")
_SOL = _s("{prod} {b1} and {b2}.|That's why we made the {line}, a {a1} {ns} that {b1}.|Our {line} {b1}, and it {b2}, too."
          "|The result is a {ns} that {b1}, without the markup.|One {ns}. It {b1}, {b2} and {b3}."
          "|{prod} is {a1}, {a2} and {a3}. Best of all, it {b1}.|Think of it as the {ns} that {b1}. Because it does."
          "|Every {line} {b1}. That's not a promise, that's the design.")
_MAT = _s("Every {ns} is made with {m1} and {m2}.|We use {m1}, {m2} and {m3}, and nothing you can't pronounce."
          "|Inside, you'll find {m1} and {m2}.|It starts with {m1}. Then we add {m2}.|The secret? {M1}, plus {m2}.")
_FEAT = _s("Details matter: {f1}, {f2} and {f3}.|Look closer and you'll notice {f1} and {f2}."
           "|Thoughtful touches like {f1} make all the difference.|Plus, {f1} and {f2}, because you deserve both.")
_AUD = _s("Made for {w}. Perfect {u}.|Designed with {w} in mind, and tested {u}.|{W} swear by it, especially {u}."
          "|Use it {u} or every single day. Either way, it {b3}.")
_PRICE = _s("All for ${price}, not the ${old} you'd pay at the big brands.|Just ${price}, shipped free."
            "|Right now it's ${price} (regularly ${old}).|Starting at ${price}.|Priced at ${price}, because quality shouldn't be a luxury.")
_PROOF = _s("Join {cust} happy customers.|Rated {rating}/5 by {reviews} verified buyers.|{cust} sold, and counting."
            "|{rating} stars from {reviews} reviews.|Trusted by {cust} {w}.|{reviews} five-star reviews can't be wrong.")
_OFFER = _s("Free shipping on orders over ${ship}.|Use code {code} for {pct}% off your first order.|Take {pct}% off with code {code}."
            "|Subscribe and save {pct}% on every delivery.|Bundle and save: get {pct}% off when you buy two."
            "|New customers save {pct}% with code {code}.|Free returns, always.")
_URG = _s("Only {stock} left in stock.|Sale ends Sunday at midnight.|Our last restock sold out in {k} days.|This price won't last."
          "|Ends tonight.|Limited run: once they're gone, they're gone.|Hurry, the {pct}% discount expires in 48 hours.")
_CTA = _s("Shop now.|Get yours today.|Shop the {line}.|Claim your {pct}% off.|Try it risk-free for {days} {trial}s."
          "|Find yours at {site}.|Order by Thursday for delivery this weekend.|Start your order today.|See why {w} love it.")
_GUAR = _s("Try it for {days} {trial}s. If you don't love it, send it back for a full refund."
           "|Backed by our {days}-{trial} money-back guarantee.|Love it, or we'll make it right."
           "|Not in love? Returns are free, no questions asked.|Our {days}-{trial} promise: love it or your money back.")
_STORY = _s("{fn} started {brand} at {place} in {year} after years of {p1}.|{brand} began in {year}, when {fn} got fed up with {p1}."
            "|It all started in {year}, when our founder {fn} spent two years testing {np} from {place}."
            "|We're {fn} and {fn2}. We started {brand} in {year} because we were sick of {p1}.")
_STORY2 = _s("Today, {pro} still {ritual}.|{Pro} wanted a {ns} that {b1}. So {pro} made one.|The goal was simple: make a {ns} that {b1}."
             "|{k} prototypes later, the {line} was born.|What began as a side project now ships to {cust} customers.")
_RITUAL = _s("personally tests every new batch|reads every single review|answers customer emails on Fridays|signs off on every design")
_PLACE = _s("a garage in Denver|a tiny Brooklyn apartment|a kitchen table in Austin|a shared studio in Portland|a farmhouse in Vermont")
_QUOTE = _s("I've tried at least {k} {np} and this is the only one that {b1}.|Honestly didn't expect much. Two weeks in, it {b1} and I've already ordered a second."
            "|My {rel} stole mine, so I had to buy another.|No more {p1}. I wish I'd found {brand} years ago."
            "|Worth every penny. {F1} alone sold me.|Five stars. It {b1}, and customer service was lovely when I needed an exchange."
            "|As one of those {w}, I'm picky. This {ns} {b1}. Sold.|I bought it on a whim and now I recommend it to everyone.")
_REL = _s("partner|sister|roommate|husband|wife|teenager|best friend|mom")
_FAQ = [("How long does shipping take?", "Most orders ship within {k} business days, and shipping is free on orders over ${ship}."),
        ("What if I don't like it?", "{guar}"), ("What's it made of?", "{M1}, {m2} and {m3}. That's it."),
        ("Is it good for {w}?", "Absolutely. It {b1}, which is exactly why so many {w} swear by it."),
        ("Do you offer discounts?", "New customers get {pct}% off with code {code}, and subscribers save on every order."),
        ("How is it different from other {np}?", "It {b1} and {b2}, and at ${price} it costs less than most of the competition."),
        ("Can I use it {u}?", "Yes! Plenty of our customers do. It {b2}.")]
_SUBJ = _s("{cn}, your {pct}% off is waiting|Back in stock: the {line}|We made something for {w}|Last chance: {pct}% off ends tonight"
           "|A note from our founder|You left something behind|The {ns} everyone's talking about|Say goodbye to {p1}")


def _ad_context(r: random.Random) -> dict:
    cat = r.choice(list(_CATS))
    d = _CATS[cat]
    ns, np_ = r.choice(d["n"])
    brand, line = _brand(r), r.choice(d["l"])
    lo, hi = d["$"]
    price = max(lo, r.randint(lo, hi) // 10 * 10 + r.choice([0, 5, 9]))
    pct = r.choice([10, 15, 20, 25, 30, 40])
    fem = r.random() < 0.55
    tag = re.sub(r"[^A-Za-z]", "", brand.replace("&", "and"))
    pools = {k: r.sample(d[k], len(d[k])) for k in "bpfma"}
    founders = r.sample(_FEM if fem else _MAS, 1) + r.sample(_FEM + _MAS, 1)
    founders[1] = founders[1] if founders[1] != founders[0] else "Sam"
    return dict(d=d, brand=brand, line=line, ns=ns, np=np_, price=f"{price:,}",
                old=f"{int(price * r.choice([1.25, 1.4, 1.5, 2])):,}", pct=pct,
                code=r.choice(["WELCOME", "HELLO", "FIRST", "SAVE", "TREAT", "SUMMER", "HOLIDAY", tag.upper()[:8]]) + str(pct),
                ship=r.choice([35, 40, 50, 60, 75, 99]), cust=f"{r.choice([5, 8, 12, 15, 20, 25, 40, 50, 75, 100, 250]) * 1000:,}+",
                rating=r.choice(["4.7", "4.8", "4.9"]), reviews=f"{r.randint(800, 45000):,}",
                days=r.choice([100, 365]) if cat == "mattresses" else r.choice([30, 30, 60, 90, 100]),
                trial="night" if cat == "mattresses" else "day", fn=founders[0], fn2=founders[1],
                pools=pools, pos=dict.fromkeys("bpfma", 0), pro="she" if fem else "he", year=r.randint(2012, 2023),
                place=r.choice(_PLACE),
                stock=r.choice([47, 112, 200, 300, 500]), site=tag.lower() + ".com", tag=tag, cn=r.choice(_FEM + _MAS),
                prod=f"the {brand} {line}" if r.random() < 0.5 else f"the {line}")


def _fill(r: random.Random, c: dict) -> dict:
    d, v, pools, pos = c["d"], dict(c), c["pools"], c["pos"]
    for key, k in (("b", 3), ("p", 2), ("f", 3), ("m", 3), ("a", 3)):  # rotate so consecutive sentences differ
        pool, i = pools[key], pos[key]
        for j in range(k):
            v[f"{key}{j + 1}"] = pool[(i + j) % len(pool)]
        pos[key] = i + (3 if key == "b" else 2)
    v.update(w=r.choice(d["w"]), u=r.choice(d["u"]), k=r.choice([3, 4, 5, 6, 8, 12]), rel=r.choice(_REL),
             ritual=r.choice(_RITUAL), A1=_cap(v["a1"]), A2=_cap(v["a2"]), M1=_cap(v["m1"]), F1=_cap(_bare(v["f1"])),
             Pro=_cap(c["pro"]), guar=r.choice(_GUAR).format(**c))
    v["W"] = _cap(v["w"])
    return v


def _say(r: random.Random, c: dict, pool: list[str]) -> str:
    return _cap(r.choice(pool).format(**_fill(r, c)))


def _para(r: random.Random, c: dict, *pools: list[str], opt: tuple = (), p: float = 0.5) -> str:
    """A paragraph: one sentence from each pool in ``pools`` and, with probability ``p`` each, from ``opt`` (shuffled in)."""
    chosen = list(pools) + [x for x in opt if r.random() < p]
    head, rest = chosen[:1], chosen[1:]
    r.shuffle(rest)
    return " ".join(_say(r, c, pool) for pool in head + rest)


def _bullets(r: random.Random, c: dict, k: int) -> str:
    mark = r.choice(["•", "-", "✓", "→", "*"])
    v = _fill(r, c)
    pool = [_cap(re.sub(r"^is ", "", v["b1"])), _cap(re.sub(r"^is ", "", v["b2"])), _cap(_bare(v["f1"])), _cap(_bare(v["f2"])), f"Made with {v['m1']}",
            f"{_cap(_bare(v['f3']))}, so it {v['b3']}", _cap(v["a1"]) + " and " + v["a2"], f"Perfect {v['u']}"]
    if "x" in c["d"]:
        pool.append("Free from " + ", ".join(r.sample(c["d"]["x"], 2)))
    items = r.sample(pool, k)
    return "\n".join(f"{mark} {x}" for x in items)


def _attr(r: random.Random) -> str:
    name, city = r.choice(_FEM + _MAS), r.choice(_CITY_ST)
    return r.choice([f"— {name} {r.choice(_LAST)[0]}., {city}", f"— {name}, verified buyer", f"★★★★★ {name} from {city}"])


def _quote(r: random.Random, c: dict) -> str:
    return f"\"{_say(r, c, _QUOTE)}\"\n{_attr(r)}"


def _lay_classic(r, c):
    out = [_say(r, c, _HEAD), _para(r, c, _SOL, _MAT if r.random() < 0.5 else _FEAT, opt=(_PAIN, _AUD, _PRICE, _GUAR), p=0.6)]
    if r.random() < 0.5:
        out.append(_para(r, c, r.choice([_STORY, _AUD, _FEAT]), opt=(_GUAR, _PROOF)))
    out.append(" ".join(_say(r, c, p) for p in (_PROOF, _OFFER, _URG) if r.random() < 0.6) + " " + _say(r, c, _CTA))
    return out


def _lay_bullets(r, c):
    out = [_say(r, c, _HEAD)]
    out.append(_para(r, c, r.choice([_SOL, _PAIN]), opt=(_AUD, _SOL, _MAT)))
    out.append(_bullets(r, c, r.randint(3, 6)))
    out.append(" ".join(_say(r, c, p) for p in r.sample([_PROOF, _PRICE, _OFFER, _GUAR, _URG], r.randint(1, 3))))
    return out + [_say(r, c, _CTA)]


def _lay_email(r, c):
    v = _fill(r, c)
    hi = r.choice([f"Hi {c['cn']},", "Hey there,", f"Hello {c['cn']}!", "Hi friend,"])
    sign = r.choice([f"— The {c['brand']} team", f"Talk soon,\n{c['fn']}, founder of {c['brand']}", f"Cheers,\nThe folks at {c['brand']}"])
    out = [f"Subject: {_cap(r.choice(_SUBJ).format(**v))}", hi, _para(r, c, r.choice([_PAIN, _SOL]), _SOL, opt=(_MAT, _FEAT, _AUD)),
           " ".join(_say(r, c, p) for p in (_OFFER, _URG, _GUAR) if r.random() < 0.6) or _say(r, c, _OFFER), _say(r, c, _CTA), sign]
    if r.random() < 0.4:
        out.append("P.S. " + _say(r, c, r.choice([_URG, _OFFER, _PROOF])))
    return out


def _lay_landing(r, c):
    v = _fill(r, c)
    secs = {"why": (["Why you'll love it", f"Why {c['brand']}?", "The details"], lambda: _bullets(r, c, r.randint(3, 4))),
            "in": (["What's inside", "Made from the good stuff", "Materials"], lambda: _para(r, c, _MAT, opt=(_FEAT,))),
            "promise": (["Our promise", "Risk-free", "The guarantee"], lambda: _say(r, c, _GUAR)),
            "rev": (["What customers say", "Don't take our word for it", "Reviews"], lambda: _quote(r, c)),
            "story": (["Our story", "How it started"], lambda: _para(r, c, _STORY, _STORY2))}
    out = [_say(r, c, _HEAD) + "\n" + _say(r, c, _SOL)]
    for key in r.sample(list(secs), r.randint(2, 3)):
        heads, body = secs[key]
        out.append(f"{r.choice(heads).format(**v)}\n{body()}")
    return out + [_say(r, c, _PROOF) + " " + _say(r, c, _CTA)]


def _lay_social(r, c):
    v = _fill(r, c)
    hooks = [f"POV: your {c['ns']} {v['b1']}.", f"New drop alert 🚨 The {c['line']} is here.", "Restocked and ready. ✨",
             f"Things we'll never make you deal with: {v['p1']}.", f"Made for {v['w']}. Obviously.",
             f"Meet your new favorite {c['ns']} 👀"]
    tags = [f"#{c['tag']}"] + ["#" + t for t in r.sample(c["d"]["t"], r.randint(2, 4))]
    tags += r.sample(["#smallbusiness", "#giftideas", "#treatyourself", "#musthave", "#newin"], r.randint(0, 2))
    body = [r.choice(hooks), _para(r, c, _SOL, opt=(_MAT, _FEAT, _AUD, _PAIN))]
    if r.random() < 0.6:
        emo = r.sample(["✨", "✅", "💧", "🔥", "🌿", "👉", "💛"], 1)[0]
        body.append("\n".join(f"{emo} {_cap(x)}" for x in r.sample([v["b1"], v["b2"], v["b3"], _bare(v["f1"])], 3)))
    body += [_say(r, c, p) for p in (_PROOF, _OFFER, _URG) if r.random() < 0.6]
    body.append(r.choice(["Link in bio.", "Tap the link in bio to shop.", "Tag someone who needs this 👇", _say(r, c, _CTA)]))
    return ["\n".join(body), " ".join(tags)]


def _lay_faq(r, c):
    v = _fill(r, c)
    qa = [f"Q: {_cap(q.format(**v))}\nA: {_cap(a.format(**v))}" for q, a in r.sample(_FAQ, r.randint(3, 4))]
    out = [_say(r, c, _HEAD)] + ([r.choice(["Frequently asked questions", "Your questions, answered", "FAQ"])] if r.random() < 0.6 else [])
    return out + qa + [_say(r, c, _CTA)]


def _lay_testimonial(r, c):
    out = [_quote(r, c), _para(r, c, _SOL, opt=(_MAT, _PRICE, _FEAT, _AUD), p=0.6)]
    if r.random() < 0.4:
        out.append(_quote(r, c))
    return out + [" ".join(_say(r, c, p) for p in (_PROOF, _OFFER) if r.random() < 0.7) + " " + _say(r, c, _CTA)]


def _lay_compare(r, c):
    v = _fill(r, c)
    b, them = c["brand"], r.choice(["Them", "The other guys", f"Typical {c['np']}", "Big-box brands"])
    head = r.choice([f"{b} vs. the big brands", f"Why switch to {b}?", "How we compare", f"Not all {c['np']} are created equal."])
    rows = [("Price", f"${c['price']}", f"${c['old']}", f"${c['price']}", f"${c['old']} for the same thing"),
            ("Made with", v["m1"], "mystery materials", f"made with {v['m1']}", "mystery materials"),
            ("The experience", re.sub(r"^is ", "", v["b1"]), v["p1"], v["b1"], v["p1"]),
            ("Guarantee", f"{c['days']} {c['trial']}s", "good luck", f"{c['days']}-{c['trial']} money-back guarantee", "no guarantee")]
    rows = r.sample(rows, r.randint(3, 4))
    style = r.random()
    if style < 0.33:
        body = "\n".join(f"{k}: {b} = {x} | {them} = {y}" for k, x, y, _, _ in rows)
    elif style < 0.66:
        body = "\n".join(f"✓ {b}: {x}\n✗ {them}: {y}" for _, _, _, x, y in rows)
    else:
        body = f"| | {b} | {them} |\n|---|---|---|\n" + "\n".join(f"| {k} | {x} | {y} |" for k, x, y, _, _ in rows)
    return [head, body, _para(r, c, _SOL, opt=(_PROOF, _GUAR)), _say(r, c, _CTA)]


def _lay_founder(r, c):
    out = [_para(r, c, _STORY, _STORY2, opt=(_PAIN,)), _para(r, c, _SOL, opt=(_MAT, _FEAT, _GUAR))]
    return out + [_say(r, c, _CTA) + r.choice(["", f"\n— {c['fn']}, founder", f"\nWith love,\n{c['fn']}"])]


def _lay_listing(r, c):
    v = _fill(r, c)
    top = r.choice([f"{c['brand']} {c['line']} | ${c['price']}", f"The {c['line']} by {c['brand']} — ${c['price']}"])
    det = [f"Materials: {v['m1']}, {v['m2']}", _cap(_bare(v["f1"])), _cap(_bare(v["f2"])), f"Ships in {v['k']} business days"]
    det = r.sample(det, r.randint(3, 4))
    return [top, _para(r, c, _SOL, opt=(_AUD, _PAIN, _MAT, _PRICE), p=0.6), r.choice(["Details:", "Specs", "Good to know:"]) + "\n"
            + "\n".join("- " + x for x in det), _say(r, c, r.choice([_GUAR, _OFFER]))]


_LAYOUTS = [_lay_classic, _lay_bullets, _lay_email, _lay_landing, _lay_social, _lay_faq, _lay_testimonial, _lay_compare,
            _lay_founder, _lay_listing]
_FDA = ("*These statements have not been evaluated by the Food and Drug Administration. This product is not intended "
        "to diagnose, treat, cure, or prevent any disease.")


def _make_ad(r: random.Random) -> tuple[str, str]:
    layout = r.choice(_LAYOUTS)
    for _ in range(50):
        c = _ad_context(r)
        text = "\n\n".join(x.strip() for x in layout(r, c) if x.strip())
        if c["d"] is _CATS["supplements"] and r.random() < 0.3:
            text += "\n\n" + _FDA
        text = _AN.sub(r"\1n ", text)
        if 60 <= len(text.split()) <= 200:
            return layout.__name__[5:], text
    raise RuntimeError("ad layout never produced 60-200 words")  # pragma: no cover - guarded by tests


def generate_dtc_ads(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct direct-to-consumer ads (60-200 words each), deterministic in ``(n, seed)``."""
    return [doc for _, doc in _collect(n, seed, _make_ad, "dtc-ads")]


# ----------------------------------------------------------------------------------------------- instructions: data
_PRE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
_PRE_IN = ("Below is an instruction that describes a task, paired with an input that provides further context. "
           "Write a response that appropriately completes the request.")

_FACTS = {  # topic -> short explanation written for this module
    "photosynthesis": "Photosynthesis is the process plants, algae and some bacteria use to turn light into chemical energy. Chlorophyll in their leaves absorbs sunlight, which powers a reaction that combines carbon dioxide from the air with water from the soil. The products are glucose, which the plant uses for energy and growth, and oxygen, which is released into the air.",
    "compound interest": "Compound interest is interest earned both on your original deposit and on the interest already added to it. For example, $1,000 at 5% a year grows to $1,050 after one year, and in the second year you earn 5% on $1,050 rather than on $1,000. Over long periods this snowball effect makes savings grow much faster than simple interest would.",
    "how vaccines work": "Vaccines train the immune system to recognize a germ without causing the disease. They contain a harmless piece or weakened form of a virus or bacterium, or instructions for making one of its proteins. The immune system responds by making antibodies and memory cells, so if the real germ appears later, the body can fight it off quickly.",
    "the water cycle": "The water cycle is the continuous movement of water around the Earth. The sun heats oceans, lakes and rivers, and water evaporates into vapor. The vapor cools as it rises, condenses into clouds and falls back as rain or snow. That water flows into rivers, soaks into the ground or returns to the sea, and the cycle starts again.",
    "inflation": "Inflation is the general rise in prices over time, which means each unit of money buys a little less than before. It often happens when demand for goods and services grows faster than the economy can produce them, or when costs such as energy and wages rise. Central banks usually try to keep inflation low and stable, often around 2% a year.",
    "how a rainbow forms": "A rainbow forms when sunlight passes through raindrops. Each drop bends the light as it enters, reflects it off the back of the drop and bends it again as it leaves. Because each color bends by a slightly different amount, white light spreads into a band of colors from red to violet. You see a rainbow when the sun is behind you and rain is in front of you.",
    "supply and demand": "Supply and demand describes how prices are set in a market. When many people want a product and there is little of it, the price tends to rise. When there is plenty of a product and few buyers, the price tends to fall. The market price settles where the amount buyers want matches the amount sellers offer.",
    "the greenhouse effect": "The greenhouse effect is the way certain gases in the atmosphere trap heat. Sunlight warms the Earth's surface, which then gives off heat as infrared radiation. Gases such as carbon dioxide, methane and water vapor absorb some of that heat and send it back toward the ground. Without this effect the planet would be too cold for most life, but adding more of these gases makes it warmer.",
    "how the heart pumps blood": "The heart is a muscle with four chambers that pumps blood around the body. The right side receives oxygen-poor blood from the body and sends it to the lungs to pick up oxygen. The left side receives oxygen-rich blood from the lungs and pumps it through the arteries to every organ. Valves between the chambers keep the blood flowing in one direction.",
    "gravity": "Gravity is the force that pulls objects with mass toward each other. The more massive an object is, the stronger its pull, and the pull weakens with distance. Earth's gravity keeps us on the ground and holds the Moon in orbit, while the Sun's gravity keeps the planets circling around it.",
    "how a personal budget works": "A budget is a plan for how you will spend and save your money. You list your income, then your fixed costs such as rent and bills, and your variable costs such as food and entertainment. Comparing the two shows whether you are spending more than you earn, and lets you set money aside for savings and goals before it gets spent.",
    "DNA": "DNA, short for deoxyribonucleic acid, is the molecule that carries genetic instructions in living things. It is shaped like a twisted ladder called a double helix, and its rungs are made of four chemical bases: A, T, C and G. The order of these bases spells out genes, which tell cells how to build the proteins they need.",
    "why we have seasons": "Seasons happen because the Earth's axis is tilted by about 23.5 degrees. As the Earth orbits the Sun, first one hemisphere and then the other leans toward the Sun. The hemisphere tilted toward the Sun gets more direct sunlight and longer days, which brings summer, while the one tilted away has winter. The distance to the Sun plays only a small role.",
    "how the internet works": "The internet is a global network of computers that exchange data using shared rules called protocols. When you load a web page, your request is split into small packets that travel through routers to the server hosting the site. The server sends the page back in packets too, and your device reassembles them. The Domain Name System translates names like example.com into numeric IP addresses.",
    "machine learning": "Machine learning is a branch of computer science in which programs learn patterns from data instead of following only hand-written rules. A model is shown many examples, such as emails labeled spam or not spam, and adjusts its internal parameters to make better predictions. Once trained, it can make predictions about new examples it has never seen.",
    "how antibiotics work": "Antibiotics are medicines that kill bacteria or stop them from multiplying. Different antibiotics attack different parts of bacterial cells, such as their cell walls or the machinery they use to make proteins. They do not work against viruses, such as those that cause colds and flu, and overusing them helps antibiotic-resistant bacteria spread.",
    "erosion": "Erosion is the process by which soil and rock are worn away and moved by water, wind, ice or gravity. Rivers carve valleys, waves reshape coastlines and glaciers grind through mountains. Over thousands or millions of years, erosion transforms entire landscapes, and the material it carries is deposited elsewhere as sediment.",
    "credit scores": "A credit score is a number that estimates how likely you are to repay borrowed money. It is calculated from your credit history, including whether you pay bills on time, how much of your available credit you use and how long you have had credit accounts. Lenders use it to decide whether to lend to you and at what interest rate.",
    "the food chain": "A food chain shows how energy passes from one living thing to another. It starts with producers, such as plants, which make food from sunlight. Herbivores eat the plants, carnivores eat the herbivores, and decomposers such as fungi and bacteria break down dead organisms and return nutrients to the soil. Many food chains link together into a food web.",
    "how electricity is generated": "Most electricity is generated by spinning a turbine connected to a generator. Inside the generator, magnets rotate past coils of wire, which pushes electrons along the wire and creates an electric current. The turbine can be turned by steam from burning fuel or from nuclear reactions, or directly by wind or flowing water. Solar panels are an exception: they turn sunlight into electricity directly.",
    "plate tectonics": "Plate tectonics is the theory that the Earth's outer shell is broken into large plates that slowly move over the hotter, softer layer beneath them. They move only a few centimeters a year, about as fast as fingernails grow. Where plates collide, pull apart or slide past each other, they cause earthquakes, build mountains and create volcanoes.",
    "how a bill becomes a law in the United States": "In the United States, a bill starts when a member of Congress introduces it in the House or the Senate. It is studied and revised in committee, then debated and voted on. If both chambers pass the same version, it goes to the President, who can sign it into law or veto it. Congress can override a veto with a two-thirds vote in both chambers.",
    "opportunity cost": "Opportunity cost is the value of the best alternative you give up when you make a choice. If you spend Saturday working an extra shift, the opportunity cost might be the hike you would otherwise have taken. The idea is a reminder that every decision has a hidden cost, even when no money changes hands.",
    "the scientific method": "The scientific method is a systematic way of learning about the world. You observe something, ask a question and propose a hypothesis that could answer it. Then you design an experiment to test the hypothesis, collect data and analyze the results. If the results do not support the hypothesis, you revise it and test again, and other scientists try to repeat the work.",
    "how batteries work": "A battery stores energy in chemical form and releases it as electricity. It has two electrodes, a negative anode and a positive cathode, separated by an electrolyte. When a device is connected, a chemical reaction sends electrons from the anode through the device to the cathode, powering it. In a rechargeable battery, an outside current pushes the reaction backward to restore the stored energy.",
    "black holes": "A black hole is a region of space where gravity is so strong that nothing, not even light, can escape. Many form when a very massive star runs out of fuel and collapses under its own weight. The boundary beyond which escape is impossible is called the event horizon. Astronomers find black holes by watching their effects on nearby stars and gas.",
    "the difference between weather and climate": "Weather is what the atmosphere is doing at a particular time and place, such as today's temperature, rain or wind. Climate is the average pattern of weather in a region over many years, usually 30 or more. A single cold day says little about the climate, but a steady change in average temperatures over decades does.",
    "how muscles grow": "Muscles grow when they are challenged with more work than they are used to, for example by lifting weights. The effort causes tiny tears in the muscle fibers, and during rest the body repairs them, making the fibers thicker and stronger. Enough protein, sleep and gradually increasing resistance all help the process continue.",
    "recycling": "Recycling turns used materials into new products instead of sending them to a landfill. Items such as paper, glass, aluminum and some plastics are collected, sorted, cleaned and processed into raw materials that manufacturers can use again. Recycling saves energy and natural resources, and it works best when items are clean and sorted correctly.",
    "how airplanes fly": "Airplanes fly because their wings are shaped and angled to push air downward as they move forward. Pushing air down gives the wing an upward force called lift. The engines provide thrust to keep the plane moving fast enough for the wings to make enough lift to balance the plane's weight, while its streamlined shape reduces drag.",
    "the stock market": "The stock market is where investors buy and sell shares of publicly traded companies. A share is a small piece of ownership in a company. Prices rise and fall with what investors are willing to pay, which reflects their expectations about the company's future profits. Over long periods stocks have historically grown in value, but prices can swing sharply in the short term.",
    "the phases of the Moon": "The Moon's phases come from how much of its sunlit half we can see from Earth. The Moon makes no light of its own; the Sun always lights half of it. As the Moon orbits Earth about once a month, our view of that lit half changes, from a new moon, when we see none of it, to a full moon, when we see all of it, and back again.",
    "fermentation": "Fermentation is a process in which microorganisms such as yeast and bacteria break down sugars without needing oxygen. Yeast turns sugar into alcohol and carbon dioxide, which is how bread rises and how beer and wine are made. Some bacteria turn sugar into lactic acid instead, which gives yogurt, sauerkraut and kimchi their tangy flavor.",
    "the placebo effect": "The placebo effect is a real improvement in symptoms after a treatment that has no active ingredient, such as a sugar pill. It happens because expectations, attention from caregivers and the ritual of treatment can change how we perceive symptoms like pain. Researchers compare new medicines with placebos to make sure the medicine itself is doing the work.",
}
_YESNO = [  # (question, answer, reason)
    ("Is the Pacific the largest ocean on Earth?", 1, "The Pacific Ocean covers about a third of the planet's surface, more than all the land combined."),
    ("Can antibiotics cure the common cold?", 0, "Colds are caused by viruses, and antibiotics only work against bacteria."),
    ("Is a tomato a fruit in botanical terms?", 1, "It develops from the flower of the plant and contains seeds, which makes it a fruit botanically."),
    ("Is the Sun a star?", 1, "The Sun is a medium-sized star, a huge ball of hot gas powered by nuclear fusion."),
    ("Do all the planets in our solar system have moons?", 0, "Mercury and Venus have no moons."),
    ("Is water made of hydrogen and oxygen?", 1, "Each water molecule (H2O) contains two hydrogen atoms and one oxygen atom."),
    ("Does sound travel faster than light?", 0, "Light travels about 300,000 kilometers per second, while sound travels about 343 meters per second in air."),
    ("Are bats mammals?", 1, "Bats are mammals: they have fur and feed their young with milk. They are the only mammals capable of true flight."),
    ("Is a whale a fish?", 0, "Whales are mammals. They breathe air through lungs and feed their calves milk."),
    ("Does water boil at 100 degrees Celsius at sea level?", 1, "At standard sea-level pressure, pure water boils at 100 °C (212 °F)."),
    ("Can penguins fly?", 0, "Penguins cannot fly, but their wings work as flippers that make them excellent swimmers."),
    ("Is Venus the hottest planet in the solar system?", 1, "Its thick carbon dioxide atmosphere traps heat, making it even hotter than Mercury."),
    ("Does the Earth take about one year to orbit the Sun?", 1, "One orbit takes about 365.25 days, which is why we add a leap day every four years."),
    ("Are spiders insects?", 0, "Spiders are arachnids. They have eight legs and two body parts, while insects have six legs and three body parts."),
    ("Is Australia both a country and a continent?", 1, "Australia is a country that occupies most of the Australian continent."),
    ("Does the human heart have four chambers?", 1, "It has two atria and two ventricles."),
    ("Do octopuses have three hearts?", 1, "Two hearts pump blood through the gills and a third pumps it to the rest of the body."),
    ("Is the Moon larger than the Earth?", 0, "The Moon's diameter is only about a quarter of the Earth's."),
    ("Does ice float on water?", 1, "Ice is less dense than liquid water, so it floats."),
    ("Is gold a good conductor of electricity?", 1, "Gold conducts electricity very well and does not corrode, so it is used in electronic connectors."),
    ("Is the Great Wall of China visible from the Moon with the naked eye?", 0, "The wall is far too narrow to be seen from the Moon, about 384,000 kilometers away."),
    ("Do humans have four lungs?", 0, "Humans have two lungs, one on each side of the chest."),
    ("Is Mount Everest the highest mountain above sea level?", 1, "Its summit is about 8,849 meters above sea level."),
    ("Is sugar a chemical element?", 0, "Table sugar is a compound made of carbon, hydrogen and oxygen."),
    ("Do plants release oxygen during photosynthesis?", 1, "Oxygen is a by-product of photosynthesis and is released into the air."),
    ("Is lightning hotter than the surface of the Sun?", 1, "A lightning bolt can reach about 30,000 °C, several times hotter than the Sun's surface."),
    ("Is the Amazon the largest tropical rainforest in the world?", 1, "The Amazon rainforest covers more than five million square kilometers of South America."),
    ("Are tomatoes and potatoes in the same plant family?", 1, "Both belong to the nightshade family, Solanaceae."),
]
_TIPS = {
    "being more productive": "Write down your three most important tasks the night before.|Work in focused 25-minute blocks with short breaks in between.|Turn off non-essential notifications while you work.|Tackle your hardest task first, when your energy is highest.|Batch similar tasks, such as email and phone calls, into set times.|Break big projects into small, concrete next steps.|Review what you accomplished at the end of each week.",
    "cooking at home": "Read the whole recipe before you start.|Prep and measure your ingredients before turning on the heat.|Season in layers and taste as you go.|Let meat rest for a few minutes after cooking so it stays juicy.|Keep your knives sharp; a sharp knife is safer than a dull one.|Don't overcrowd the pan, or food will steam instead of brown.|Finish dishes with a squeeze of lemon to brighten the flavor.",
    "traveling": "Roll your clothes instead of folding them to save space.|Keep digital and paper copies of your passport and bookings.|Pack essentials in your carry-on in case your luggage is delayed.|Tell your bank about your trip so your card isn't blocked.|Learn a few basic phrases in the local language.|Carry a refillable water bottle and a portable charger.|Leave a little room in your bag for things you pick up along the way.",
    "sleeping better": "Go to bed and wake up at the same time every day, even on weekends.|Keep your bedroom cool, dark and quiet.|Avoid caffeine in the afternoon and evening.|Put screens away at least 30 minutes before bed.|Get some daylight in the morning to set your body clock.|Avoid heavy meals and alcohol close to bedtime.|If you can't fall asleep after 20 minutes, get up and do something calm until you feel sleepy.",
    "saving money": "Set up an automatic transfer to savings on payday.|Track your spending for a month to see where your money goes.|Cook at home more often and bring lunch to work.|Cancel subscriptions you no longer use.|Wait 48 hours before making any non-essential purchase.|Build an emergency fund that covers three to six months of expenses.|Shop with a list and compare unit prices at the supermarket.",
    "studying effectively": "Study in short sessions spread over several days instead of cramming.|Test yourself with practice questions rather than rereading notes.|Explain the material out loud as if you were teaching it.|Put your phone in another room while you study.|Mix different topics or problem types in one session.|Get enough sleep, since memories are consolidated while you rest.|Summarize each chapter in your own words.",
    "starting a vegetable garden": "Choose a spot that gets at least six hours of sun a day.|Start small with a few easy crops like lettuce, beans and tomatoes.|Add compost to improve your soil.|Water deeply but less often to encourage strong roots.|Water in the early morning to reduce evaporation.|Mulch around plants to keep moisture in and weeds down.|Pull weeds while they are small.",
    "training for a first 5K": "Start with a run-walk plan and build up gradually.|Increase your weekly distance by no more than about 10 percent.|Run most of your miles at an easy, conversational pace.|Get shoes that fit well from a running store.|Warm up with a few minutes of brisk walking.|Take at least one full rest day each week.|Add some strength training to help prevent injuries.",
    "public speaking": "Know your opening lines by heart.|Practice out loud, ideally in front of a friend.|Focus on three main points your audience should remember.|Pause instead of using filler words like \"um\".|Make eye contact with different people in the room.|Arrive early to check the room and equipment.|Tell a short story to illustrate your key idea.",
    "working from home": "Set up a dedicated workspace, even if it's a small corner.|Keep regular working hours and stick to them.|Get dressed as if you were going to the office.|Take real breaks away from your screen.|Keep your team updated on your progress and availability.|Use a video call for complex conversations instead of long chat threads.|End the day with a clear shutdown routine.",
}
_SYN = {k: v.split(",") for k, v in (e.split(":") for e in _s(
    "happy:cheerful,joyful,content,glad|big:large,huge,enormous,vast|small:tiny,little,compact,miniature|fast:quick,rapid,swift,speedy"
    "|smart:clever,intelligent,bright,sharp|angry:furious,irritated,annoyed,cross|beautiful:lovely,attractive,gorgeous,stunning"
    "|difficult:hard,challenging,tough,demanding|important:significant,crucial,vital,essential|begin:start,commence,launch,initiate"
    "|finish:complete,conclude,end,wrap up|help:assist,aid,support|brave:courageous,bold,fearless,daring|tired:exhausted,weary,fatigued,drained"
    "|sad:unhappy,gloomy,miserable,downcast|funny:amusing,humorous,hilarious,comical|calm:peaceful,tranquil,serene,relaxed"
    "|rich:wealthy,affluent,prosperous,well-off|strange:odd,unusual,peculiar,bizarre|buy:purchase,acquire,obtain|choose:select,pick,opt for"
    "|easy:simple,effortless,straightforward|honest:truthful,sincere,candid|improve:enhance,upgrade,refine,boost|idea:concept,notion,thought"
    "|mistake:error,blunder,slip|quiet:silent,hushed,peaceful|old:ancient,aged,elderly|cold:chilly,freezing,icy,frosty"))}
_ANT = dict(x.split("/") for x in _s(
    "hot/cold|happy/sad|ancient/modern|generous/stingy|victory/defeat|increase/decrease|brave/cowardly|arrive/depart|accept/reject"
    "|expand/contract|friend/enemy|early/late|empty/full|cheap/expensive|visible/invisible|rough/smooth|strong/weak|rich/poor"
    "|asleep/awake|inside/outside|loud/quiet|optimistic/pessimistic|permanent/temporary|include/exclude|majority/minority"
    "|maximum/minimum|simple/complex|shallow/deep|polite/rude|wide/narrow|success/failure|question/answer|borrow/lend|remember/forget"))
_ANT.update({v: k for k, v in list(_ANT.items())})
_LISTS = {k: _s(v) for k, v in {
    "fruits": "apple|banana|orange|mango|pear|pineapple|strawberry|grape|kiwi|peach|cherry|watermelon",
    "vegetables": "carrot|broccoli|spinach|potato|onion|cucumber|cauliflower|zucchini|cabbage|lettuce|kale|beet",
    "mammals": "elephant|dolphin|tiger|horse|bat|whale|kangaroo|rabbit|giraffe|bear|otter|camel",
    "birds": "eagle|sparrow|penguin|owl|parrot|robin|flamingo|swan|pelican|crow|hummingbird|ostrich",
    "planets in our solar system": "Mercury|Venus|Earth|Mars|Jupiter|Saturn|Uranus|Neptune",
    "continents": "Africa|Antarctica|Asia|Australia|Europe|North America|South America",
    "colors of the rainbow": "red|orange|yellow|green|blue|indigo|violet",
    "programming languages": "Python|JavaScript|Java|C|C++|Rust|Go|Ruby|Swift|Kotlin|TypeScript|PHP",
    "musical instruments": "piano|guitar|violin|flute|trumpet|drums|cello|saxophone|clarinet|harp|trombone|ukulele",
    "countries in South America": "Brazil|Argentina|Chile|Peru|Colombia|Venezuela|Ecuador|Bolivia|Paraguay|Uruguay|Guyana|Suriname",
    "European capital cities": "Paris|Berlin|Madrid|Rome|Lisbon|Vienna|Warsaw|Athens|Dublin|Prague|Stockholm|Oslo",
    "herbs used in cooking": "basil|parsley|rosemary|thyme|oregano|mint|cilantro|dill|sage|chives|tarragon|bay leaf",
    "renewable energy sources": "solar power|wind power|hydroelectric power|geothermal energy|tidal energy|biomass",
    "noble gases": "helium|neon|argon|krypton|xenon|radon",
    "sports played with a ball": "soccer|basketball|tennis|volleyball|baseball|cricket|rugby|golf|table tennis|handball|water polo",
}.items()}
_CLASSES = {k: _s(v) for k, v in {"mammal": "dog|whale|bat|horse|dolphin|rabbit|goat", "bird": "eagle|penguin|ostrich|owl|parrot|duck",
            "fish": "salmon|shark|tuna|goldfish|trout|cod", "reptile": "crocodile|lizard|snake|turtle|iguana",
            "amphibian": "frog|toad|salamander|newt", "insect": "ant|bee|butterfly|beetle|mosquito|grasshopper"}.items()}
_CITIES = _s("Lisbon|Toronto|Chicago|Nairobi|Melbourne|Berlin|Osaka|Denver|Dublin|Seoul|Austin|Madrid|Vancouver|Cape Town|Oslo"
             "|Boston|Lyon|Auckland|Mumbai|Prague|Lagos|Montreal")
_MONTHS = _s("January|February|March|April|May|June|July|August|September|October|November|December")
_DAYS = _s("Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday")
_ITEMS = _s("apples|marbles|stickers|pencils|cookies|books|stamps|seashells|trading cards|cupcakes|balloons|oranges|crayons")
_WORDS = _s("strawberry|mississippi|bookkeeper|banana|committee|parallel|assessment|necessary|balloon|success|tomorrow|excellent"
            "|referee|pepper|coffee|address|occurrence|programming|accommodation|possession|garden|keyboard|elephant|umbrella"
            "|lantern|whistle|pineapple|avocado|rhythm|butterfly|calendar|mountain|notebook|volcano|sunflower|puzzle")
_SUBJ1 = _s("the chef|my neighbor|the teacher|our manager|the committee|my aunt|the mechanic|the gardener|the pilot|the author")
_SUBJ2 = _s("the students|my parents|the engineers|the volunteers|the children|the reporters|our neighbors|the nurses")
_VERBS = [tuple(_s(x.replace(",", "|"))) for x in (
    "write,writes,wrote,written,a letter;a report;the invitations", "paint,paints,painted,painted,the fence;a portrait;the kitchen walls",
    "fix,fixes,fixed,fixed,the old bicycle;the leaking tap;the broken chairs", "bake,bakes,baked,baked,a chocolate cake;fresh bread;the cookies",
    "clean,cleans,cleaned,cleaned,the windows;the garage;the classroom", "build,builds,built,built,a treehouse;the new bridge;wooden shelves",
    "read,reads,read,read,the newspaper;the instructions;a short story", "sing,sings,sang,sung,a folk song;the national anthem;two lullabies",
    "catch,catches,caught,caught,the ball;a large fish;the early train", "plant,plants,planted,planted,tomatoes;an apple tree;the sunflowers",
    "choose,chooses,chose,chosen,the winning design;a new logo;the paint colors", "send,sends,sent,sent,the invoices;a package;an email",
    "take,takes,took,taken,the photographs;the minutes;the last seat", "wash,washes,washed,washed,the dishes;the car;the muddy boots",
    "organize,organizes,organized,organized,the meeting;a charity run;the files", "find,finds,found,found,the missing keys;a wallet;the answer",
    "drive,drives,drove,driven,the delivery van;the school bus;the old truck", "teach,teaches,taught,taught,the new recruits;a chemistry lesson;the children")]
_HABIT = _s("every morning|on Saturdays|twice a week|every spring|after lunch|on weekends|each evening")
_WHEN = _s("yesterday|last week|on Monday|after lunch|this morning|last summer|two days ago")
_ORG_A = _s("North|Blue|Silver|Red|Pine|Iron|Bright|Summit|Harbor|Cedar|Atlas|Nova|Granite|Maple")
_ORG_B = _s("wood|field|stone|gate|water|ridge|bridge|point|line|view")
_ORG_C = _s("Logistics|Analytics|Bank|Labs|Foods|Media|Health|Capital|Robotics|Energy|Software|Pharma")
_TOWN_A = _s("Mill|Ash|Cedar|Oak|Clear|Fox|Stone|Willow|Maple|Elm|Brook|Red")
_TOWN_B = _s("brook|ford|field|ton|haven|ridge|wood|dale") + [" Falls", " Springs"]


def _person(r: random.Random) -> str:
    return f"{r.choice(_FEM + _MAS)} {r.choice(_LAST)}"


def _org(r: random.Random) -> str:
    return f"{r.choice(_ORG_A)}{r.choice(_ORG_B)} {r.choice(_ORG_C)}"


def _town(r: random.Random) -> str:
    return r.choice(_TOWN_A) + r.choice(_TOWN_B)


def _join(xs: list[str], conj: str = "and") -> str:
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + f" {conj} " + xs[-1]


def _num(x: float) -> str:
    return f"{x:,.2f}".rstrip("0").rstrip(".") if x != int(x) else f"{int(x):,}"


def _sentence(r: random.Random, tense: str = "present") -> tuple[str, str, tuple, str]:
    """(subject, object, verb forms, time phrase) for a simple S-V-O sentence."""
    v = r.choice(_VERBS)
    return r.choice(_SUBJ1 + _SUBJ2), r.choice(v[4].split(";")), v, r.choice(_HABIT if tense == "present" else _WHEN)


def _present(s: str, o: str, v: tuple, t: str) -> str:
    return _cap(f"{s} {v[0] if s in _SUBJ2 else v[1]} {o} {t}.")


_ONES = _s("zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen"
           "|eighteen|nineteen")
_TENS = _s("||twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety")


def _words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        return _ONES[n // 100] + " hundred" + (" " + _words(n % 100) if n % 100 else "")
    return _words(n // 1000) + " thousand" + (" " + _words(n % 1000) if n % 1000 else "")


def _roman(n: int) -> str:
    out = ""
    for v, s in zip((1000, 900, 500, 400, 100, 90, 50, 40, 10, 9, 5, 4, 1), "M CM D CD C XC L XL X IX V IV I".split()):
        out += s * (n // v)
        n %= v
    return out


# ----------------------------------------------------------------------------------------------- instructions: families
# Each family returns (instruction, input or "", response); every answer is computed or looked up, never guessed.
def _f_arithmetic(r):
    op = r.choice("+-×÷")
    a, b = (r.randint(2, 99), r.randint(2, 99)) if op == "×" else (r.randint(2, 999), r.randint(2, 999))
    if op == "÷":
        b = r.randint(2, 25)
        a = b * r.randint(2, 60)
    c = {"+": a + b, "-": a - b, "×": a * b, "÷": a // b}[op]
    e, word = f"{a} {op} {b}", {"+": "plus", "-": "minus", "×": "times", "÷": "divided by"}[op]
    ins = r.choice(["What is {e}?", "Calculate {e}.", "Compute {e}.", "Solve the following: {e}", "Work out the value of {e}.",
                    "What does {e} equal?"]).format(e=e)
    if op == "+" and r.random() < 0.3:
        ins = r.choice([f"What is the sum of {a} and {b}?", f"Add {a} and {b}."])
    elif op == "×" and r.random() < 0.3:
        ins = r.choice([f"What is the product of {a} and {b}?", f"Multiply {a} by {b}."])
    resp = r.choice([f"{e} = {c}", f"{a} {word} {b} equals {c}.", f"The answer is {c}.", f"{e} = {c}, so the answer is {c}."])
    if op == "×" and b > 10 and b % 10 and r.random() < 0.5:
        t, u = b // 10 * 10, b % 10
        resp = f"Split {b} into {t} + {u}: {a} × {t} = {a * t} and {a} × {u} = {a * u}. Adding them gives {a * t} + {a * u} = {c}."
    return ins, "", resp


_WP = {  # op -> [(question, worked answer)]; each question has a marker word: more (+), left (-), each (×), equally (÷)
    "+": [("{n} has {a} {it}. {P} buys {b} more. How many {it} does {p} have now?", "{n} starts with {a} {it} and buys {b} more: {a} + {b} = {c}. {P} now has {c} {it}."),
          ("{n} collected {a} {it} on Monday and {b} more on Tuesday. How many {it} did {p} collect in total?", "Add the two days together: {a} + {b} = {c}. {n} collected {c} {it}."),
          ("There are {a} {it} in a box. {n} puts in {b} more. How many {it} are in the box now?", "{a} + {b} = {c}, so there are {c} {it} in the box.")],
    "-": [("{n} had {a} {it} and gave {b} to a friend. How many {it} does {p} have left?", "{n} gave away {b} of {a} {it}: {a} - {b} = {c}. {P} has {c} {it} left."),
          ("A shop had {a} {it} and sold {b} of them in the morning. How many {it} are left?", "Subtract the ones sold: {a} - {b} = {c}. There are {c} {it} left."),
          ("{n} started the day with {a} {it} and lost {b}. How many {it} are left?", "{a} - {b} = {c}. {n} has {c} {it} left.")],
    "×": [("{n} buys {a} packs of {it}, and each pack contains {b} {it}. How many {it} does {p} buy altogether?", "Multiply the number of packs by the number in each pack: {a} × {b} = {c}. {n} buys {c} {it}."),
          ("A classroom has {a} tables, and each table has {b} {it} on it. How many {it} are there in total?", "There are {b} {it} on each of the {a} tables: {a} × {b} = {c}. There are {c} {it} in total."),
          ("Notebooks cost ${b} each. How much do {a} notebooks cost?", "{a} × ${b} = ${c}. The notebooks cost ${c}.")],
    "÷": [("{n} has {a} {it} and wants to share them equally among {b} friends. How many {it} does each friend get?", "Divide the {it} equally: {a} ÷ {b} = {c}. Each friend gets {c} {it}."),
          ("{a} {it} are packed equally into {b} boxes. How many {it} go in each box?", "{a} ÷ {b} = {c}, so each box holds {c} {it}.")],
}


def _f_word_problem(r):
    op = r.choice("+-×÷")
    if op == "÷":
        b, c = r.randint(2, 9), r.randint(2, 15)
        a = b * c
    else:
        a, b = (r.randint(2, 12), r.randint(2, 12)) if op == "×" else (r.randint(5, 80), r.randint(2, 40))
        a, b = (a + b, b) if op == "-" else (a, b)
        c = {"+": a + b, "-": a - b, "×": a * b}[op]
    name = r.choice(_FEM + _MAS)
    pro = "she" if name in _FEM else "he"
    q, ans = r.choice(_WP[op])
    v = dict(n=name, p=pro, P=_cap(pro), it=r.choice(_ITEMS), a=a, b=b, c=c)
    return q.format(**v), "", ans.format(**v)


_CONV = [x.split(":") for x in _s(
    "kilometer/kilometers:mile/miles:0.621371|mile/miles:kilometer/kilometers:1.609344|kilogram/kilograms:pound/pounds:2.20462"
    "|pound/pounds:kilogram/kilograms:0.453592|inch/inches:centimeter/centimeters:2.54|centimeter/centimeters:inch/inches:0.393701"
    "|liter/liters:US gallon/US gallons:0.264172|meter/meters:foot/feet:3.28084|foot/feet:meter/meters:0.3048|hour/hours:minute/minutes:60"
    "|minute/minutes:second/seconds:60|day/days:hour/hours:24|kilogram/kilograms:gram/grams:1000|meter/meters:centimeter/centimeters:100"
    "|week/weeks:day/days:7|degree Celsius/degrees Celsius:degree Fahrenheit/degrees Fahrenheit:C|degree Fahrenheit/degrees Fahrenheit:degree Celsius/degrees Celsius:F")]


def _f_unit_conversion(r):
    row = r.choice(_CONV)
    (a1, a), (_, b), f = row[0].split("/"), row[1].split("/"), row[2]
    v = r.choice([r.randint(2, 120), round(r.uniform(1, 50), 1)])
    vs, a = _num(v), (a1 if v == 1 else a)
    if f in "CF":
        raw = v * 9 / 5 + 32 if f == "C" else (v - 32) * 5 / 9
        res = round(raw, 1)
        about, eq = ("", "=") if abs(raw - res) < 1e-9 else ("about ", "≈")
        how = f"multiply by 9/5 and add 32: {vs} × 9/5 + 32 {eq} {_num(res)}" if f == "C" else f"subtract 32 and multiply by 5/9: ({vs} - 32) × 5/9 {eq} {_num(res)}"
        ins = r.choice([f"Convert {vs} {a} to {b}.", f"What is {vs} {a} in {b}?"])
        return ins, "", f"{vs} {a} is {about}{_num(res)} {b}. To convert, {how}."
    fac = float(f)
    res = round(v * fac, 2)
    exact = f in ("2.54", "1.609344", "0.3048") or fac == int(fac)
    approx = not exact or abs(v * fac - res) > 1e-6
    ins = r.choice([f"Convert {vs} {a} to {b}.", f"How many {b} are in {vs} {a}?", f"What is {vs} {a} in {b}?", f"Express {vs} {a} in {b}."])
    if fac == int(fac) and not approx:
        resp = f"{vs} {a} is {_num(res)} {b}, because there are {int(fac)} {b} in one {a1} ({vs} × {int(fac)} = {_num(res)})."
    else:
        about, eq = ("about ", "≈") if approx else ("", "=")
        one = "" if exact else "about "
        resp = f"{vs} {a} is {about}{_num(res)} {b}. One {a1} is {one}{f} {b}, so multiply: {vs} × {f} {eq} {_num(res)}."
    return ins, "", resp


_ASC = _s("Sort the following numbers in ascending order.|Arrange these numbers from smallest to largest."
          "|Put the following numbers in order from lowest to highest.|Order this list of numbers from smallest to largest.")
_DESC = _s("Sort the following numbers in descending order.|Arrange these numbers from largest to smallest.|Rank these numbers from highest to lowest.")
_AZ = _s("Sort the following words in alphabetical order.|Alphabetize this list.|Arrange these words from A to Z.|Put these words in alphabetical order.")
_ZA = _s("Sort these words in reverse alphabetical order.|Arrange the following words from Z to A.")


def _inline(r, ins: str, data: str) -> tuple[str, str]:
    """Put the data either in the Input section or after a colon in the instruction."""
    return (ins, data) if r.random() < 0.6 else (ins[:-1] + ": " + data, "")


def _f_sort(r):
    desc = r.random() < 0.4
    if r.random() < 0.55:
        lo = -50 if r.random() < 0.2 else 1
        xs = [str(x) for x in r.sample(range(lo, 250), r.randint(5, 9))]
        ys, ins, kind = sorted(xs, key=int, reverse=desc), r.choice(_DESC if desc else _ASC), "descending" if desc else "ascending"
    else:
        src = r.choice([_LISTS["fruits"], _LISTS["mammals"], _CITIES, _FEM + _MAS, _WORDS, _LISTS["musical instruments"]])
        xs = r.sample(src, r.randint(4, 8))
        ys, ins, kind = sorted(xs, key=str.lower, reverse=desc), r.choice(_ZA if desc else _AZ), "reverse alphabetical" if desc else "alphabetical"
    ins, inp = _inline(r, ins, ", ".join(xs))
    out = ", ".join(ys)
    return ins, inp, r.choice([out, f"Here is the list in {kind} order: {out}", f"Sorted: {out}", f"{out}."])


def _f_count(r):
    k = r.random()
    if k < 0.45:
        w = r.choice(_WORDS)
        ch = r.choice(w) if r.random() < 0.8 else r.choice("abcdefghijklmnopqrstuvwxyz")
        c = w.count(ch)
        ins = r.choice([f'How many times does the letter "{ch}" appear in the word "{w}"?', f'Count the occurrences of the letter "{ch}" in "{w}".',
                        f'In the word "{w}", how many times does "{ch}" occur?'])
        if c == 0:
            return ins, "", f'The letter "{ch}" does not appear in "{w}", so the count is 0.'
        pos = [str(i + 1) for i, x in enumerate(w) if x == ch]
        return ins, "", r.choice([f'The letter "{ch}" appears {c} time{"s" * (c > 1)} in "{w}".',
                                  f'{c}. The letter "{ch}" appears in "{w}" at position{"s" * (c > 1)} {_join(pos)}.'])
    if k < 0.7:
        w = r.choice(_WORDS)
        vs = [x for x in w if x in "aeiou"]
        ins = r.choice([f'How many vowels are in the word "{w}"?', f'Count the vowels (a, e, i, o, u) in "{w}".'])
        return ins, "", f'There are {len(vs)} vowels in "{w}": {_join(vs)}.' if vs else f'There are 0 vowels (a, e, i, o, u) in "{w}".'
    s = _present(*_sentence(r))
    ins, inp = r.choice([("How many words are in the following sentence?", s), ("Count the words in this sentence.", s),
                         (f'How many words does this sentence contain: "{s}"', "")])
    return ins, inp, r.choice([f"The sentence has {len(s.split())} words.", f"{len(s.split())} words."])


def _f_reverse(r):
    if r.random() < 0.6:
        w = r.choice(_WORDS + _LISTS["fruits"] + _LISTS["mammals"] + _CITIES)
        ins = r.choice([f'Reverse the letters of the word "{w}".', f'Spell "{w}" backwards.', f'Write the word "{w}" in reverse.',
                        f'What is "{w}" spelled backwards?'])
        return ins, "", r.choice([f'"{w[::-1]}"', f'Spelled backwards, "{w}" becomes "{w[::-1]}".', f'The reversed word is "{w[::-1]}".'])
    s = _present(*_sentence(r))[:-1]
    ins, inp = _inline(r, r.choice(["Reverse the order of the words in the following sentence.", "Rewrite this sentence with its word order reversed."]), s)
    return ins, inp, " ".join(s.split()[::-1])


def _f_case(r):
    s = r.choice([lambda: _present(*_sentence(r)), lambda: f"{_person(r)} moved from {r.choice(_CITIES)} to {r.choice(_CITIES)} in {r.choice(_MONTHS)}."])()
    k = r.randrange(4)
    if k == 0:
        ins, out = r.choice(["Convert the following sentence to uppercase.", "Rewrite this text in all capital letters."]), s.upper()
    elif k == 1:
        s = r.choice([s.upper(), " ".join(_cap(w) for w in s.split())])
        ins, out = r.choice(["Convert this text to lowercase.", "Rewrite the following in all lowercase letters."]), s.lower()
    elif k == 2:
        s = s.lower()
        ins, out = r.choice(["Capitalize the first letter of every word in this sentence.", "Make every word in this sentence start with a capital letter."]), " ".join(_cap(w) for w in s.split())
    else:  # title case: minor words stay lowercase unless first
        s, minor = s.lower().rstrip("."), set(_s("a|an|the|and|or|of|in|on|at|to|by|for|from"))
        ins, out = r.choice(["Convert the following text to title case.", "Rewrite this line in title case."]), " ".join(w if i and w in minor else _cap(w) for i, w in enumerate(s.split()))
    ins, inp = _inline(r, ins, s)
    return ins, inp, out


_SENT = {"positive": _s("was absolutely wonderful|exceeded all my expectations|was worth every penny|made my whole week|was a pleasant surprise"
                        "|was fantastic from start to finish|is the best I've tried in years"),
         "negative": _s("was a complete disappointment|was a waste of money|was frustrating from start to finish|fell far short of what was promised"
                        "|left me really annoyed|is the worst I've tried in years|was a total letdown"),
         "neutral": _s("was about what I expected|was neither good nor bad|was okay|was pretty average|did the job"
                       "|was similar to others I've tried")}
_TAILS = {"positive": ["", ", and I'd happily recommend it", ", and I'll definitely be back"], "negative": ["", ", and I won't be buying again", ", and I want my money back"],
          "neutral": ["", ", nothing more and nothing less"]}
_REVIEWED = _s("The pasta at this restaurant|This phone|The hotel room|The movie|The customer service|The latest update|This backpack"
               "|The concert|The delivery|The new cafe downtown|This vacuum cleaner|The tour")


def _f_sentiment(r):
    lab = r.choice(list(_SENT))
    preds = r.sample(_SENT[lab], 2)
    text = f"{r.choice(_REVIEWED)} {preds[0]}{r.choice(_TAILS[lab])}." + (f" Overall, it {preds[1]}." if r.random() < 0.4 else "")
    ins = r.choice(["Classify the sentiment of this review as positive, negative or neutral.", "Is the sentiment of the following text positive, negative or neutral?",
                    "Determine whether the following customer review is positive, negative or neutral.", "What is the sentiment of this sentence?"])
    why = {"positive": f'the reviewer says it "{preds[0]}", which expresses satisfaction', "negative": f'the reviewer says it "{preds[0]}", which expresses dissatisfaction',
           "neutral": "the reviewer sounds lukewarm, neither clearly pleased nor clearly unhappy"}[lab]
    return ins, text, r.choice([_cap(lab), f"{_cap(lab)}. {_cap(why)}.", f"The sentiment is {lab}, because {why}."])


def _f_synonyms(r):
    w = r.choice(list(_SYN))
    syn, k = _SYN[w], r.randint(2, 3)
    if r.random() < 0.35:
        return r.choice([f'What is another word for "{w}"?', f'Give me a synonym for "{w}".']), "", f'Another word for "{w}" is "{syn[0]}".'
    ins = r.choice([f'Give {_words(k)} synonyms for "{w}".', f'List {k} words that mean the same as "{w}".', f'Provide {_words(k)} synonyms for the word "{w}".'])
    xs = r.sample(syn, k)
    return ins, "", r.choice([_cap(_join(xs)) + ".", f'Synonyms for "{w}" include {_join(xs)}.', "\n".join(f"{i}. {_cap(x)}" for i, x in enumerate(xs, 1))])


def _f_antonyms(r):
    w = r.choice(sorted(_ANT))
    ins = r.choice([f'What is the opposite of "{w}"?', f'Give an antonym for the word "{w}".', f'Provide the antonym of "{w}".', f"What is an antonym of {w}?"])
    return ins, "", r.choice([f'The opposite of "{w}" is "{_ANT[w]}".', _cap(_ANT[w]) + ".", f'An antonym of "{w}" is "{_ANT[w]}".'])


def _f_list_items(r):
    cat = r.choice(list(_LISTS))
    items = _LISTS[cat]
    k = r.randint(3, min(7, len(items)))
    ins = r.choice([f"List {k} {cat}.", f"Name {_words(k)} {cat}.", f"Give me {k} examples of {cat}.", f"Can you list {_words(k)} {cat}?"])
    if len(items) <= 8 and r.random() < 0.4:
        k, ins = len(items), r.choice([f"List all the {cat}.", f"Name all {_words(len(items))} {cat}."])
    xs = items[:] if k == len(items) else r.sample(items, k)
    keep = cat.endswith(("languages", "system", "continents", "cities", "America"))
    show = [x if keep else _cap(x) for x in xs]
    flat = _join(xs if keep else [x.lower() for x in xs])
    return ins, "", r.choice(["\n".join(f"{i}. {x}" for i, x in enumerate(show, 1)), "\n".join("- " + x for x in show),
                              f"The {cat} are {flat}." if k == len(items) else f"Here are {k} {cat}: {flat}."])


def _f_tense(r):
    s, o, v, t = _sentence(r)
    fut = r.random() < 0.35
    out = _cap(f"{s} will {v[0]} {o} {t}.") if fut else _cap(f"{s} {v[2]} {o} {t}.")
    ins = r.choice(["Rewrite the following sentence in the future tense.", "Change this sentence so it describes the future."]) if fut else \
        r.choice(["Rewrite the following sentence in the past tense.", "Change this sentence to the simple past tense.", "Put the sentence below into the past tense."])
    ins, inp = _inline(r, ins, _present(s, o, v, t))
    return ins, inp, out


def _f_passive(r):
    s, o, v, t = _sentence(r, "past")
    be = "were" if o.split()[-1].endswith("s") else "was"
    ins = r.choice(["Rewrite the following sentence in the passive voice.", "Change this sentence from active to passive voice.",
                    "Convert the sentence below to the passive voice."])
    ins, inp = _inline(r, ins, _cap(f"{s} {v[2]} {o} {t}."))
    return ins, inp, _cap(f"{o} {be} {v[3]} by {s} {t}.")


def _f_summarize(r):
    town, p, k = _town(r), _person(r), r.randrange(4)
    if k == 0:
        food, nth, n, m = r.choice(_s("chili|apple|seafood|barbecue|dumpling|pie|taco")), r.choice(_s("fifth|tenth|twelfth|third|25th")), r.randint(20, 150) * 100, r.randint(8, 90) * 500
        cause = r.choice(_s("library|animal shelter|youth soccer league|food bank|community garden"))
        text = (f"{town} held its {nth} annual {food} festival on Saturday. Around {n:,} visitors came to sample dishes from {r.randint(12, 60)} local vendors, "
                f"and a local band played until sunset. Organizers said the event raised ${m:,} for the town's {cause}. {p}, who has run the festival "
                f"since it began, said next year's event is already being planned.")
        summ = f"{town}'s {nth} annual {food} festival drew about {n:,} visitors and raised ${m:,} for the town's {cause}."
    elif k == 1:
        org, ind, x, h = _org(r), r.choice(_s("meal-delivery|solar-panel|language-learning|pet-care|cybersecurity|home-fitness")), r.randint(3, 80), r.randint(10, 120)
        city, reg = r.choice(_CITIES), r.choice(_s("Europe|South America|Southeast Asia|Canada|the Middle East"))
        text = (f"{org}, a {ind} startup based in {city}, announced on {r.choice(_DAYS)} that it has raised ${x} million in new funding. The company was "
                f"founded in {r.randint(2012, 2022)} by {p}. It plans to use the money to hire {h} more people and to expand into {reg} next year. "
                f"\"We're only getting started,\" {p.split()[0]} said in a statement.")
        summ = f"{org}, a {city}-based {ind} startup, raised ${x} million and plans to hire {h} people and expand into {reg}."
    elif k == 2:
        habit, out = r.choice([("walked for 30 minutes a day", "walking"), ("ate fish twice a week", "eating fish"), ("slept at least seven hours a night", "sleep"),
                               ("volunteered regularly", "volunteering")]), r.choice(_s("develop heart disease|report feeling lonely|develop type 2 diabetes|experience memory decline"))
        n, y, pct = r.randint(10, 90) * 100, r.randint(5, 20), r.randint(12, 40)
        text = (f"Researchers at the University of {town} followed {n:,} adults for {y} years to study the link between {habit[1]} and long-term health. "
                f"They found that people who {habit[0]} were {pct}% less likely to {out} than those who did not. The authors cautioned that the study "
                f"shows a correlation rather than proof of cause and effect, and said more research is needed.")
        summ = f"A {y}-year study of {n:,} adults found that people who {habit[0]} were {pct}% less likely to {out}, though it does not prove cause and effect."
    else:
        f1, f2 = r.sample(_s("a maker space|a children's reading room|a recording studio|a rooftop garden|quiet study rooms|a cafe"), 2)
        mo, d, mths, m = r.choice(_MONTHS), r.randint(1, 28), r.randint(6, 18), r.randint(2, 9)
        text = (f"The {town} public library will reopen on {mo} {d} after {mths} months of renovation. The ${m} million project added {f1} and {f2}, "
                f"and replaced the building's aging heating system. Head librarian {p} said the library expects more than {r.randint(5, 40) * 100:,} "
                f"visitors in its first month. Opening-day events include a story hour for children and guided tours.")
        summ = f"The {town} public library reopens on {mo} {d} after {mths} months and ${m} million of renovations that added {f1} and {f2}."
    ins = r.choice(["Summarize the following paragraph in one sentence.", "Write a one-sentence summary of this text.", "Give a brief summary of the passage below.",
                    "Condense the following news item into a single sentence.", "What is the main point of this paragraph? Answer in one sentence."])
    return ins, text, summ


def _f_explain(r):
    t = r.choice(list(_FACTS))
    ins = r.choice([f"Explain {t} in simple terms.", f"Give a brief explanation of {t}.", f"Can you explain {t}?", f"Describe {t} in a few sentences.",
                    f"Write a short paragraph explaining {t}.", f"I've never really understood {t}. Could you explain it?"])
    return ins, "", _FACTS[t]


def _f_yes_no(r):
    k = r.random()
    if k < 0.45:
        q, a, why = r.choice(_YESNO)
        return q, "", f"{'Yes' if a else 'No'}. {why}"
    if k < 0.65:
        n = r.randint(11, 300)
        d = next((i for i in range(2, int(n ** 0.5) + 1) if n % i == 0), None)
        resp = f"Yes. {n} has no divisors other than 1 and itself, so it is prime." if d is None else f"No. {n} = {d} × {n // d}, so it is not prime."
        return r.choice([f"Is {n} a prime number?", f"Is {n} prime?"]), "", resp
    if k < 0.8:
        y = r.choice([r.randint(1890, 2100), r.choice([1900, 2000, 2100, 1800, 2400])])
        if y % 400 == 0:
            resp = f"Yes. {y} is divisible by 400, so it is a leap year."
        elif y % 100 == 0:
            resp = f"No. {y} is divisible by 100 but not by 400, so it is not a leap year."
        else:
            resp = f"Yes. {y} is divisible by 4 and not by 100, so it is a leap year." if y % 4 == 0 else f"No. {y} is not divisible by 4, so it is not a leap year."
        return r.choice([f"Is {y} a leap year?", f"Was {y} a leap year?" if y < 2024 else f"Will {y} be a leap year?"]), "", resp
    b = r.randint(3, 12)
    a = b * r.randint(3, 40) + (0 if r.random() < 0.5 else r.randint(1, b - 1))
    q, rem = divmod(a, b)
    return f"Is {a} divisible by {b}?", "", f"Yes. {a} ÷ {b} = {q} with no remainder." if rem == 0 else f"No. {a} ÷ {b} = {q} with a remainder of {rem}."


_EMAILS = [  # recipient, purpose (for the instruction), subject, body sentences
    ("your manager", "asking for {day} off", "Time off request for {day}", "I'd like to request {day} off to {reason}.|I'll make sure my current tasks are wrapped up beforehand, and {coll} has kindly offered to cover anything urgent.|Please let me know if that works for the team."),
    ("a colleague", "asking to move your {day} meeting to {day2}", "Moving our {day} meeting", "Something has come up, and I won't be able to make our meeting on {day} at {time}.|Would {day2} at the same time work for you instead?|Sorry for the short notice, and thanks for being flexible."),
    ("your landlord", "reporting that the {appl} has stopped working", "Broken {appl} in unit {unit}", "I'm writing to let you know that the {appl} in unit {unit} stopped working on {day}.|Could you arrange for someone to take a look this week?|I'm home most evenings, so any time after 5 p.m. would be ideal."),
    ("your professor", "requesting a short extension on the {assign}", "Extension request: {assign}", "I'm writing to ask whether I could have a short extension on the {assign}, which is due on {day}.|I've been {reason2} this week and want to hand in work I'm proud of.|I could submit it by {day2}. Thank you for considering my request."),
    ("a mentor", "thanking them for their help with {thing}", "Thank you", "I wanted to say a big thank you for your help with {thing}.|Your advice made a real difference, and I learned a lot from working with you.|I hope I can return the favor sometime."),
    ("the hiring manager", "following up on your application for the {role} position", "Following up: {role} application", "I'm following up on my application for the {role} position, which I submitted on {date}.|I'm still very excited about the opportunity and would be glad to share anything else that would help.|Thank you for your time, and I look forward to hearing from you."),
    ("your team", "inviting everyone to a {event} on {day}", "You're invited: {event} on {day}", "We're having a {event} on {day} at {time} in {place}, and you're all invited.|There will be snacks and drinks, so just bring yourselves.|Let me know by Wednesday if you can make it so we can plan the food."),
    ("a customer", "apologizing that their order will arrive late", "An update on your order #{order}", "Thank you for your patience with order #{order}.|Because of a delay at our warehouse, it will arrive a few days later than planned, on {date}.|We're sorry for the inconvenience and have refunded your shipping costs."),
]


def _f_email(r):
    rcp, purpose, subj, body = r.choice(_EMAILS)
    d1, d2 = r.sample(_DAYS[:5], 2)
    v = dict(day=d1, day2=d2, time=r.choice(_s("9 AM|10:30 AM|1 PM|2 PM|3:30 PM|4 PM")), coll=r.choice(_FEM + _MAS),
             reason=r.choice(_s("attend my sister's graduation|take my car in for repairs|go to a medical appointment|help my parents move")),
             appl=r.choice(_s("heater|dishwasher|washing machine|oven|air conditioner")), unit=r.randint(101, 512),
             assign=r.choice(_s("history essay|lab report|final project|research paper")), reason2=r.choice(_s("ill with the flu|dealing with a family emergency")),
             thing=r.choice(_s("my portfolio review|the grant application|my first conference talk|the quarterly report")),
             role=r.choice(_s("Marketing Coordinator|Data Analyst|Junior Designer|Customer Success Manager")), date=f"{r.choice(_MONTHS)} {r.randint(1, 28)}",
             event=r.choice(_s("team lunch|small farewell party|end-of-quarter celebration")), place=r.choice(_s("the main conference room|the cafe downstairs|the rooftop terrace")),
             order=r.randint(10000, 99999))
    tone, first, last = r.choice(["formal", "friendly"]), r.choice(_FEM + _MAS), r.choice(_LAST)
    title = "Professor" if "professor" in rcp else ("Ms." if first in _FEM else "Mr.")
    hello = ("Dear all," if tone == "formal" else "Hi everyone,") if "team" in rcp else (f"Dear {title} {last}," if tone == "formal" else f"Hi {first},")
    signed = r.random() < 0.5
    me = _person(r) if signed else "[Your Name]"
    bye = r.choice(["Best regards,", "Kind regards,", "Sincerely,"] if tone == "formal" else ["Thanks,", "Cheers,", "Best,"])
    ins = r.choice(["Write a {tone} email to {rcp} {p}.", "Draft a short, {tone} email to {rcp} {p}.", "Compose an email to {rcp} {p}. Use a {tone} tone."])
    ins = ins.format(tone=tone, rcp=rcp, p=purpose.format(**v))
    want_subj = r.random() < 0.4
    text = "\n\n".join(([f"Subject: {subj.format(**v)}"] if want_subj or r.random() < 0.5 else []) + [hello, " ".join(body.format(**v).split("|")), f"{bye}\n{me}"])
    ins += " Include a subject line." if want_subj else ""
    ins += f" Sign it as {me}." if signed and r.random() < 0.6 else ""
    if r.random() < 0.5:
        ins += f" Keep it under {(len(text.split()) // 25 + 1) * 25 + r.choice([0, 25])} words."
    return ins, "", text


def _records(r) -> tuple[list[str], list[dict], str]:
    k, kind = r.randint(2, 4), r.randrange(3)
    if kind == 0:
        recs = [dict(name=_person(r), age=r.randint(19, 78), city=r.choice(_CITIES)) for _ in range(k)]
        prose = " ".join(f"{x['name']} is {x['age']} years old and lives in {x['city']}." for x in recs)
    elif kind == 1:
        names = r.sample(_s("notebook|desk lamp|water bottle|backpack|coffee mug|USB cable|stapler|monitor stand|wireless keyboard"), k)
        recs = [dict(item=n, price=round(r.randint(150, 8000) / 100, 2), quantity=r.randint(1, 20)) for n in names]
        prose = " ".join(f"We ordered {x['quantity']} × {x['item']} at ${x['price']:.2f} each." for x in recs)
    else:
        ti = [f"The {a} {b}" for a, b in zip(r.sample(_s("Silent|Golden|Hidden|Last|Winter|Paper|Distant|Broken"), k), r.sample(_s("Harbor|Garden|Orchard|Letter|Signal|Voyage|Lantern|Bridge"), k))]
        recs = [dict(title=t, author=_person(r), year=r.randint(1950, 2023)) for t in ti]
        prose = " ".join(f"\"{x['title']}\" was written by {x['author']} and published in {x['year']}." for x in recs)
    keys = list(recs[0])
    lines = "\n".join(", ".join(f"{kk}: {x[kk]}" for kk in keys) for x in recs)
    return keys, recs, prose if r.random() < 0.5 else lines


def _f_json(r):
    keys, recs, text = _records(r)
    ins = r.choice([f"Convert the following information into a JSON array of objects with the keys {_join(keys)}.", "Format these records as JSON.",
                    f"Turn the data below into JSON, using the fields {', '.join(keys)}."])
    return ins, text, json.dumps(recs, indent=2)


def _f_csv(r):
    keys, recs, text = _records(r)
    if r.random() < 0.4:
        text = json.dumps(recs, indent=2)
    ins = r.choice(["Convert the following data into CSV format with a header row.", f"Format the records below as a CSV table with the columns {', '.join(keys)}.",
                    "Turn this data into a CSV table."])
    return ins, text, "\n".join([",".join(keys)] + [",".join(f"{x[k]:.2f}" if k == "price" else str(x[k]) for k in keys) for x in recs])


def _f_entities(r):
    p1, p2, o1, o2, c = _person(r), _person(r), _org(r), _org(r), r.choice(_CITIES)
    mo, d, y = r.choice(_MONTHS), r.randint(1, 28), r.randint(2005, 2024)
    date = f"{mo} {d}, {y}"
    forms = [(f"{p1} met {p2} at the {o1} office in {c} on {date}.", [p1, p2], [o1], date),
             (f"On {date}, {o1} announced that {p1} would lead its new branch in {c}.", [p1], [o1], date),
             (f"In {mo} {y}, {p1} left {o1} and moved to {c} to join {o2}.", [p1], [o1, o2], f"{mo} {y}"),
             (f"{o1} and {o2} signed a partnership agreement in {c} on {date}, according to {p1}.", [p1], [o1, o2], date)]
    text, ppl, orgs, dt = r.choice(forms)
    ins = r.choice(["Extract all named entities from the following sentence and group them by type.",
                    "Identify the people, organizations, locations and dates mentioned in this sentence.", "List the named entities in the text below."])
    if r.random() < 0.5:
        out = f"People: {', '.join(ppl)}\nOrganizations: {', '.join(orgs)}\nLocations: {c}\nDates: {dt}"
    else:
        out = "\n".join([f"- {x} (person)" for x in ppl] + [f"- {x} (organization)" for x in orgs] + [f"- {c} (location)", f"- {dt} (date)"])
    return ins, text, out


def _f_tips(r):
    t = r.choice(list(_TIPS))
    k = r.randint(3, 6)
    xs = r.sample(_s(_TIPS[t]), k)
    ins = r.choice([f"Give me {k} tips for {t}.", f"Share {_words(k)} practical tips for {t}.", f"What are some tips for {t}?", f"Can you suggest {k} tips for {t}?"])
    body = "\n".join(f"{i}. {x}" for i, x in enumerate(xs, 1))
    return ins, "", r.choice([body, f"Here are {k} tips for {t}:\n\n{body}"])


def _f_roman(r):
    n = r.choice([r.randint(1, 100), r.randint(1, 3999), r.randint(1900, 2030)])
    rn, parts, m = _roman(n), [], n
    for v, s in zip((1000, 900, 500, 400, 100, 90, 50, 40, 10, 9, 5, 4, 1), "M CM D CD C XC L XL X IX V IV I".split()):
        parts += [f"{s * (m // v)} ({v * (m // v)})"] if m >= v else []
        m %= v
    why = " + ".join(parts) + f" = {n}"
    if r.random() < 0.5:
        return r.choice([f"Convert {n} to Roman numerals.", f"Write the number {n} in Roman numerals.", f"How is {n} written in Roman numerals?"]), "", f"{n} in Roman numerals is {rn}, because {why}."
    return r.choice([f"What number does the Roman numeral {rn} represent?", f"Convert the Roman numeral {rn} to an ordinary number."]), "", f"{rn} = {n}. Reading it piece by piece: {why}."


def _f_stats(r):
    xs = [r.randint(1, 99) for _ in range(r.randint(5, 9))]
    k, ys = r.randrange(4), sorted(xs)
    data = ", ".join(map(str, xs))
    if k == 0:
        m = sum(xs) / len(xs)
        ins, out = r.choice(["Find the mean of the following numbers.", "Calculate the average of these numbers."]), f"The sum is {sum(xs)} and there are {len(xs)} numbers, so the mean is {sum(xs)} ÷ {len(xs)} {'=' if m == round(m, 2) else '≈'} {_num(round(m, 2))}."
    elif k == 1:
        h = len(ys) // 2
        med = ys[h] if len(ys) % 2 else (ys[h - 1] + ys[h]) / 2
        how = f"the middle value is {ys[h]}" if len(ys) % 2 else f"the median is the average of the two middle values, {ys[h - 1]} and {ys[h]}"
        ins, out = r.choice(["Find the median of the following numbers.", "What is the median of this list?"]), f"Sorted: {', '.join(map(str, ys))}. There are {len(ys)} numbers, so {how}, which gives a median of {_num(med)}."
    elif k == 2:
        ins, out = r.choice(["What is the range of the following numbers?", "Find the range of this data set."]), f"The largest value is {ys[-1]} and the smallest is {ys[0]}, so the range is {ys[-1]} - {ys[0]} = {ys[-1] - ys[0]}."
    else:
        big = r.random() < 0.5
        ins, out = f"Which is the {'largest' if big else 'smallest'} number in this list?", f"The {'largest' if big else 'smallest'} number is {ys[-1] if big else ys[0]}."
    ins, inp = _inline(r, ins, data)
    return ins, inp, out


def _f_percent(r):
    p, x = r.choice([5, 10, 15, 20, 25, 30, 40, 50, 75]), r.randint(1, 40) * 20
    d = x * p // 100
    k = r.randrange(3)
    if k == 0:
        return r.choice([f"What is {p}% of {x}?", f"Calculate {p} percent of {x}."]), "", f"{p}% of {x} is {p}/100 × {x} = {d}."
    if k == 1:
        it = r.choice(_s("jacket|pair of boots|lamp|bicycle|coffee table|backpack"))
        return f"A {it} costs ${x} and is on sale for {p}% off. What is the sale price?", "", f"The discount is {p}% of ${x}, which is ${d}. The sale price is ${x} - ${d} = ${x - d}."
    p = r.choice([10, 15, 20, 25])
    d = x * p // 100
    return f"How much is a {p}% tip on a ${x} restaurant bill?", "", f"A {p}% tip on ${x} is {p}/100 × ${x} = ${d}, for a total of ${x + d}."


def _f_weekday(r):
    day, k, back = r.choice(_DAYS), r.randint(1, 45), r.random() < 0.3
    ans = _DAYS[(_DAYS.index(day) + (-k if back else k)) % 7]
    ins = f"If today is {day}, what day of the week was it {k} days ago?" if back else r.choice(
        [f"What day of the week is it {k} days after {day}?", f"If today is {day}, what day will it be in {k} days?"])
    w, d = divmod(k, 7)
    if d == 0:
        return ins, "", f"{k} days is exactly {w} week{'s' * (w > 1)}, so it {'was' if back else 'will be'} {day} again."
    lead = f"{k} days is {w} week{'s' * (w != 1)} and {d} day{'s' * (d > 1)}. Weeks don't change the day, so count {d} day{'s' * (d > 1)} {'back' if back else 'forward'} from {day}" if w else f"Count {d} day{'s' * (d > 1)} {'back' if back else 'forward'} from {day}"
    return ins, "", f"{lead}: the answer is {ans}."


def _f_number_words(r):
    n = r.choice([r.randint(11, 99), r.randint(100, 999), r.randint(1000, 9999)])
    ins = r.choice([f"Write the number {n} in words.", f"Spell out the number {n:,}.", f"How do you write {n:,} in English words?"])
    return ins, "", r.choice([_cap(_words(n)) + ".", f"{n:,} is written as \"{_words(n)}\"."])


def _f_classify(r):
    if r.random() < 0.5:
        pairs = [(x, c) for c in r.sample(list(_CLASSES), 3) for x in r.sample(_CLASSES[c], r.randint(1, 2))]
        r.shuffle(pairs)
        ins = r.choice(["Classify each of these animals as a mammal, bird, fish, reptile, amphibian or insect.", "Which animal class does each of the following belong to?"])
        return ins, ", ".join(x for x, _ in pairs), "\n".join(f"{_cap(x)}: {c}" for x, c in pairs)
    fr, vg = r.sample(_LISTS["fruits"], r.randint(2, 3)), r.sample(_LISTS["vegetables"], r.randint(2, 3))
    mix = fr + vg
    r.shuffle(mix)
    ins = r.choice(["Sort these foods into fruits and vegetables.", "Group the following items into fruits and vegetables."])
    return ins, ", ".join(mix), f"Fruits: {', '.join(x for x in mix if x in fr)}\nVegetables: {', '.join(x for x in mix if x in vg)}"


_FAMILIES: dict[str, Callable] = {name[3:]: fn for name, fn in globals().items() if name.startswith("_f_")}
INSTRUCTION_FAMILIES: tuple[str, ...] = tuple(_FAMILIES)


def _alpaca(ins: str, inp: str, resp: str) -> str:
    if inp:
        return f"{_PRE_IN}\n\n### Instruction:\n{ins}\n\n### Input:\n{inp}\n\n### Response:\n{resp}"
    return f"{_PRE}\n\n### Instruction:\n{ins}\n\n### Response:\n{resp}"


def _make_instruction(r: random.Random) -> tuple[str, str]:
    fam = r.choice(INSTRUCTION_FAMILIES)
    return fam, _alpaca(*_FAMILIES[fam](r))


def generate_instructions(n: int, seed: int = 0, *, return_family: bool = False) -> list[str] | list[tuple[str, str]]:
    """``n`` distinct Alpaca-format examples; with ``return_family=True``, ``(family, text)`` pairs (see ``INSTRUCTION_FAMILIES``)."""
    pairs = _collect(n, seed, _make_instruction, "instructions")
    return pairs if return_family else [doc for _, doc in pairs]


# ----------------------------------------------------------------------------------------------- weather bulletins
# Forecasts, shipping forecasts, warnings, outlooks, broadcast scripts, climate summaries and mountain forecasts for an
# invented country; every place name is built from the morphemes below. Temperatures in °C, rain in mm, pressure in
# hPa; wind in km/h or mph (one unit per bulletin) or Beaufort forces at sea. Numbers agree within a bulletin (lows
# below highs, gusts above mean speeds, frost only when the low is near freezing).
_W_SEASONS = {  # months, (low range), (high range), sky phrases typical of the season
    "winter": ((11, 0, 1), (-8, 5), (-1, 11), _s(
        "wintry showers|sleet and snow showers|a sharp frost and freezing fog|snow, mainly over high ground|"
        "crisp sunshine after a frosty start|icy stretches on untreated surfaces|a raw, grey day with drizzle|"
        "heavy snow showers driven in on a bitter wind|hill snow turning to rain at lower levels|"
        "hoar frost lingering in sheltered valleys")),
    "spring": ((2, 3, 4), (0, 9), (8, 19), _s(
        "sunshine and blustery showers|a few heavy showers with hail|bright spells and the odd shower|"
        "a chilly start then pleasant sunshine|a late frost in rural spots|thickening cloud with rain later|"
        "patchy drizzle on windward coasts|showers merging into longer spells of rain")),
    "summer": ((5, 6, 7), (9, 18), (18, 33), _s(
        "long spells of hot sunshine|humid with thunderstorms breaking out|hazy sunshine and light winds|"
        "sea fog hugging the coast|very warm and muggy|a refreshing breeze on the coast|"
        "isolated thunderstorms with torrential downpours|fine and dry with high cloud")),
    "autumn": ((8, 9, 10), (2, 12), (9, 21), _s(
        "mist and fog slow to clear|gales in exposed places|showery rain clearing to sunny spells|"
        "a mild and damp day|a chilly night with a touch of frost|heavy rain spreading from the west|"
        "bright and breezy with scattered showers|low cloud and murk over the hills")),
}
_W_SKY = _s("sunny spells|clear skies|a good deal of cloud|bright intervals|patchy cloud|grey and overcast skies|"
            "scattered showers|outbreaks of rain|persistent rain|light rain and drizzle|mist and fog patches|"
            "low cloud over the hills|mostly dry weather|a mix of sunshine and showers|variable cloud|"
            "heavy, thundery showers|showers, some prolonged|isolated light showers")
_W_REGION = _s("the far north|northern districts|western coasts|eastern counties|the south coast|central areas|"
               "inland areas|upland areas|the islands|the southwest|the northeast|the lowlands|the river valleys|"
               "the central plain|the capital region|northern and western hills|coastal districts|the east coast|"
               "sheltered eastern parts|the southern uplands")
_W_PLACE_A = _s("Arden|Brennock|Callow|Dunmore|Elsdon|Farrow|Garvel|Hollin|Kestle|Lorne|Mardale|Nethy|Orrin|Penmoor|"
                "Ravel|Selwick|Tarrow|Ulvin|Wendle|Yarrow|Corran|Glaisdale|Ashby|Keld")
_W_RANGE = _s("Hills|Fells|Range|Moors|Highlands|Peaks|Mountains|Uplands")
_W_SEA_A = _s("North|South|Outer|Inner|Little|Great|East|West|Far")
_W_SEA_B = _s("Skerry|Kestrel|Heron|Corrie|Marlin|Tern|Selkie|Gannet|Cormorant|Puffin|Shearwater|Fulmar|Solan|Merrow")
_W_SEA_C = _s("Bank|Deep|Sound|Bight|Reach|Rise|Shoal|Gap|Ground|Approaches")
_W_SYSTEM = _s("An area of high pressure|A ridge of high pressure|A deep area of low pressure|A slow-moving weather front|"
               "A cold front|A warm front|An occluded front|A trough of low pressure|A complex area of low pressure|"
               "A shallow low|A col of slack pressure|A blocking high")
_W_MOVE = _s("will move slowly east|clears southeast during the morning|stalls over northern areas|drifts north overnight|"
             "pushes in from the west later|weakens as it moves inland|deepens as it crosses the north|"
             "stays close to the west coast|slips away to the south by evening|builds from the southwest|"
             "gradually loses its grip|brings a band of rain across all areas")
_W_DIRS = _s("north|northeast|east|southeast|south|southwest|west|northwest")
_W_ABBR = {"north": "N", "northeast": "NE", "east": "E", "southeast": "SE", "south": "S", "southwest": "SW", "west": "W",
           "northwest": "NW"}
_W_SEA_STATE = _s("smooth|slight|slight or moderate|moderate|moderate or rough|rough|rough or very rough|very rough|high")
_W_SEA_WX = _s("fair|showers|rain|rain then showers|thundery showers|fog patches|squally showers|wintry showers|"
               "occasional rain|drizzle, fog patches later|rain at times")
_W_VIS = _s("good|moderate or good|moderate|good, occasionally poor|poor|moderate, occasionally very poor|"
            "very poor in fog patches|good, becoming moderate later")
_W_WARN = {  # hazard -> (amounts template, impacts, advice)
    "rain": ("{a}-{b} mm of rain is expected widely, with {c}-{d} mm possible on high ground.",
             _s("Spray and flooding on roads will probably make journey times longer|Bus and train services may be "
                "delayed or cancelled|Some homes and businesses could be flooded|Fast flowing or deep floodwater is "
                "possible|Some communities may become cut off by flooded roads|Power cuts may occur"),
             _s("Check whether your property is at risk of flooding|Never drive through floodwater|Move valuables "
                "upstairs if water is rising|Keep drains and gutters clear|Allow extra time for your journey")),
    "wind": ("Gusts of {a}-{b} km/h are likely, and up to {c} km/h on exposed coasts and hills.",
             _s("Flying debris could cause injuries|Large waves and beach material may be thrown onto sea fronts|"
                "Some roads and bridges are likely to close|Fallen trees may block roads and railway lines|"
                "Ferry crossings are likely to be cancelled|Some damage to roofs is possible"),
             _s("Secure loose objects such as bins, trampolines and garden furniture|Stay away from the coast at "
                "high tide|Avoid walking in woodland|Check ferry and flight times before travelling|Drive slowly on "
                "exposed routes, especially in high-sided vehicles")),
    "snow": ("{a}-{b} cm of snow is likely above 200 m, with up to {c} cm on the highest routes.",
             _s("Some roads may become blocked by deep snow|Rural communities could be cut off|Travel by road and "
                "rail will probably be delayed|Power cuts are possible|Pavements may be treacherous"),
             _s("Carry a blanket, a torch and a charged phone in the car|Check on elderly neighbours|Clear paths "
                "early, before the snow compacts|Only travel if your journey is essential")),
    "ice": ("Temperatures falling to -{a} °C after rain will leave untreated surfaces icy; freezing rain is possible "
            "on hills above {c} m.",
            _s("Icy patches will form on untreated roads, pavements and cycle paths|Slips and falls are likely|"
               "Some delays to road and rail travel are possible|Freezing rain may glaze cars and power lines"),
            _s("Wear footwear with a good grip|Allow extra time to de-ice your car|Keep to gritted routes where "
               "possible|Look out for black ice on bridges and shaded roads")),
    "thunderstorms": ("{a}-{b} mm of rain may fall in less than an hour in a few places, with frequent lightning and "
                      "hail.",
                      _s("Sudden flooding of homes and businesses could happen quickly|Lightning strikes may damage "
                         "buildings|Hail and gusty winds may cause damage|Driving conditions may change rapidly|"
                         "Power cuts may occur"),
                      _s("Unplug sensitive electronic equipment|Avoid open ground and tall isolated trees|Do not "
                         "shelter under trees|Postpone outdoor events where possible")),
    "fog": ("Visibility will fall below {c} m in places, and locally below 50 m.",
            _s("Journeys will take longer|Some flights may be delayed or cancelled|Driving conditions will be "
               "hazardous on fast roads|Fog may be slow to clear from valleys"),
            _s("Use dipped headlights and fog lights|Leave a generous gap to the vehicle in front|Check with your "
               "airline before travelling")),
    "extreme heat": ("Daytime temperatures of {a}-{b} °C are expected, with nights staying above {d} °C in towns.",
                     _s("Heat-related illness is possible, especially among older people and young children|Demand "
                        "for water and power will rise|Delays to rail services are possible as tracks expand|More "
                        "people are likely to visit coastal and open water areas"),
                     _s("Drink plenty of water and avoid alcohol|Keep out of the sun between 11 am and 3 pm|Close "
                        "curtains on windows facing the sun|Never leave children or pets in parked cars|Check on "
                        "people who live alone")),
}
_W_OPEN = _s("Good morning|Good evening|Hello there|Good afternoon|Hello again")
_W_CHAT = _s("It'll be a day of two halves|We've got a bit of everything coming up|Not a bad day in prospect|"
             "It's a soggy picture for many of us|Things are looking more settled|The wind is the main story today|"
             "It's turning colder over the next few days|There's some welcome sunshine on the way")
_W_TIP = _s("so don't forget the umbrella|so a good day for drying washing|so wrap up warm if you're heading out|"
            "so take care on the roads first thing|so it's worth keeping an eye on the forecast|"
            "so plenty of sun cream if you're out for long|so a coat with a hood might be wise|"
            "so make the most of the dry spells")
_W_NOTE = _s("the wettest spell since records began at the station in {y0}|a storm on the {d1} that brought gusts of "
             "{g} km/h|fog that lingered for much of the {d1} and {d2}|a thunderstorm on the {d1} that dropped {mm} mm "
             "in an hour|a late frost on the {d1} that damaged blossom|a hailstorm on the {d1} that whitened streets|"
             "an unusually warm spell from the {d1} to the {d2}|a dry fortnight from the {d1}|the first air frost of "
             "the season on the {d1}|snow lying {cm} cm deep on the morning of the {d1}")


def _w_place(r: random.Random) -> str:
    return r.choice([_town(r), r.choice(_W_PLACE_A) + r.choice(["", "bridge", " Bay", " Head", "mouth", " Cross"])])


def _w_range(r: random.Random) -> str:
    return f"the {r.choice(_W_PLACE_A)} {r.choice(_W_RANGE)}"


def _w_sea(r: random.Random) -> str:
    return f"{r.choice(_W_SEA_A)} {r.choice(_W_SEA_B)}" if r.random() < 0.5 else f"{r.choice(_W_SEA_B)} {r.choice(_W_SEA_C)}"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _w_context(r: random.Random) -> dict:
    season = r.choice(list(_W_SEASONS))
    months, lo_rng, hi_rng, skies = _W_SEASONS[season]
    lo = r.randint(*lo_rng)
    hi = max(lo + r.randint(3, 11), r.randint(*hi_rng))
    mph = r.random() < 0.4
    wind = r.randint(8, 60)
    d = r.choice(_W_DIRS)
    return {"season": season, "month": _MONTHS[r.choice(months)], "day": r.randint(1, 24), "wd": r.randrange(7),
            "lo": lo, "hi": hi, "skies": skies, "dir": d, "wind": wind, "gust": wind + r.randint(10, 45), "mph": mph,
            "hpa": r.randint(968, 1042),
            "time": r.choice(["04:00", "05:30", "06:00", "10:00", "11:30", "16:00", "17:30", "21:00", "22:00"]),
            "morning": r.choice(["04:00", "05:00", "05:30", "06:00", "07:15", "10:00", "11:30"])}


_W_WET = re.compile(r"rain|shower|drizzle|sleet|snow|thunder|downpour|wintry|hail|murk|damp", re.I)


def _w_rain_chance(r: random.Random, sky: str) -> int:
    return r.choice([50, 60, 70, 80, 90]) if _W_WET.search(sky) else r.choice([0, 5, 10, 20, 30])


def _w_speed(c: dict, kmh: int) -> str:
    return f"{round(kmh / 1.609344)} mph" if c["mph"] else f"{kmh} km/h"


def _w_wind(r: random.Random, c: dict) -> str:
    d, s, g = c["dir"], c["wind"], c["gust"]
    adj = "light" if s < 15 else "moderate" if s < 30 else "fresh" if s < 40 else "strong"
    return r.choice([f"{adj} {d}erly winds, gusting {_w_speed(c, g)} at times",
                     f"winds {d} {_w_speed(c, s)}, gusts of {_w_speed(c, g)}",
                     f"a {adj} {d}erly breeze" if s < 40 else f"strong {d}erly winds with gusts near {_w_speed(c, g)}",
                     f"{d}erly winds of {_w_speed(c, max(5, s - 10))} to {_w_speed(c, s + 5)}"])


def _w_sky(r: random.Random, c: dict) -> str:
    return r.choice(c["skies"] if r.random() < 0.5 else _W_SKY)


def _w_temp_sentence(r: random.Random, c: dict, part: str = "day") -> str:
    if part == "night":
        lo = c["lo"]
        frost = " with a frost in rural spots" if lo <= 1 else ""
        return r.choice([f"Minimum temperature {lo} to {lo + 3} °C{frost}.", f"Lows of {lo} °C{frost}.",
                         f"Temperatures falling to {lo} °C in towns, a little lower in the countryside{frost}."])
    hi = c["hi"]
    extra = (" Feeling hot and humid." if hi >= 28 else " Feeling cold in the wind." if hi <= 6 and c["wind"] > 20 else "")
    return r.choice([f"Maximum temperature {hi} °C.", f"Highs of {hi - 2} to {hi} °C.",
                     f"Temperatures reaching {hi} °C in the best of the sunshine.", f"Top temperature {hi} °C."]) + extra


def _w_date(c: dict, offset: int = 0) -> str:
    return f"{_DAYS[(c['wd'] + offset) % 7]} {c['day'] + offset} {c['month']}"


def _w_general(r: random.Random, c: dict) -> list[str]:
    reg = r.sample(_W_REGION, 3)
    out = [f"{r.choice(['Forecast', 'National forecast', 'Weather forecast', 'Regional forecast'])} issued at {c['morning']} on "
           f"{_w_date(c)}"]
    if r.random() < 0.7:
        out.append(f"Synopsis: {r.choice(_W_SYSTEM)}, {c['hpa']} hPa, {r.choice(_W_MOVE)}.")
    out.append(f"Today: {_cap(_w_sky(r, c))} for {reg[0]}, while {reg[1]} see {_w_sky(r, c)}. {_cap(_w_wind(r, c))}. "
               f"{_w_temp_sentence(r, c)}")
    out.append(f"Tonight: {_cap(_w_sky(r, c))}, {r.choice(['turning', 'becoming', 'staying'])} "
               f"{r.choice(['drier', 'clearer', 'cloudier', 'wetter', 'calmer', 'breezier'])} "
               f"{r.choice(['later', 'towards dawn', 'after midnight', 'in the west'])}. {_w_temp_sentence(r, c, 'night')}")
    if r.random() < 0.8:
        out.append(f"{_DAYS[(c['wd'] + 1) % 7]}: {_cap(_w_sky(r, c))}, "
                   f"{r.choice(['mainly for', 'especially across', 'chiefly in', 'most frequent over'])} {reg[2]}. "
                   f"{r.choice(['Rather', 'Slightly', 'Noticeably', 'A little'])} "
                   f"{r.choice(['warmer', 'colder', 'milder', 'fresher'])} than today.")
    if r.random() < 0.6:
        out.append(f"Outlook for {_DAYS[(c['wd'] + 2) % 7]} to {_DAYS[(c['wd'] + 4) % 7]}: "
                   f"{_cap(r.choice(c['skies']))} at first, then {r.choice(_W_SKY)}. "
                   f"{r.choice(['Temperatures near normal', 'Temperatures above normal', 'Temperatures below normal', 'Temperatures close to the seasonal average'])}"
                   f"{r.choice(['.', ', with a risk of frost by night.' if c['lo'] <= 4 else '.', ', but windy at times.'])}")
    return out


def _w_force(r: random.Random) -> tuple[str, int]:
    a = r.randint(2, 8)
    b = min(12, a + r.randint(0, 2))
    word = {8: "gale 8", 9: "severe gale 9", 10: "storm 10", 11: "violent storm 11", 12: "hurricane force 12"}
    if b == a:
        return str(a), b
    tail = r.choice(["", f", occasionally {word.get(b + 1, b + 1)} later", f", increasing {word.get(b + 1, b + 1)} for a time",
                     ", decreasing 4 later", ", becoming variable 3 later"])
    return f"{a} to {word.get(b, b)}{tail}", b


def _w_marine(r: random.Random, c: dict) -> list[str]:
    out = [f"{r.choice(['Shipping forecast', 'Inshore waters forecast', 'Sea area forecast', 'Marine forecast'])} issued "
           f"at {c['time']} UTC on {_w_date(c)} for the next 24 hours"]
    names = list(dict.fromkeys(_w_sea(r) for _ in range(14)))  # distinct sea areas, in drawn order
    if r.random() < 0.5:
        out.append(f"There are warnings of gales in {_join(sorted(r.sample(names, r.randint(1, 2))))}.")
    if r.random() < 0.6:
        out.append(f"General synopsis at {r.choice(['0000', '0600', '1200', '1800'])}: Low, {_w_place(r)} "
                   f"{c['hpa'] - r.randint(5, 25)}, expected {_w_place(r)} {c['hpa'] - r.randint(0, 20)} by "
                   f"{r.choice(['0600', '1200', '1800', 'midnight'])} {_DAYS[(c['wd'] + 1) % 7]}.")
    for _ in range(min(r.randint(2, 4), len(names) // 3)):
        areas = _join(sorted(names.pop() for _ in range(r.randint(1, 3))))
        wind, force = _w_force(r)
        d = r.choice(_W_DIRS)
        d2 = r.choice([x for x in _W_DIRS if x != d])
        state = _W_SEA_STATE[min(len(_W_SEA_STATE) - 1, max(0, force - 2 + r.randint(-1, 1)))]
        lines = [f"{areas}:", f"Wind: {_cap(d)} {wind}{r.choice(['', f', veering {d2} later', f', backing {d2} for a time'])}.",
                 f"Sea state: {_cap(state)}.", f"Weather: {_cap(r.choice(_W_SEA_WX))}.", f"Visibility: {_cap(r.choice(_W_VIS))}."]
        out.append("\n".join(lines) if r.random() < 0.6 else " ".join(lines))
    return out


def _w_warning(r: random.Random, c: dict) -> list[str]:
    hazard = r.choice(list(_W_WARN))
    amount, impacts, advice = _W_WARN[hazard]
    colour = r.choice(["Yellow", "Yellow", "Amber", "Red"])
    a = r.randint(15, 40) if hazard != "ice" else r.randint(2, 8)
    if hazard == "extreme heat":
        a = max(30, c["hi"] + r.randint(0, 3))
    elif hazard == "wind":
        a = r.randint(70, 100)
    b = a + r.randint(5, 25)
    c_ = (b + r.randint(10, 60)) if hazard != "fog" else r.choice([100, 150, 200])
    vals = {"a": a, "b": b, "c": c_, "d": r.randint(17, 22) if hazard == "extreme heat" else c_ + r.randint(10, 40)}
    if hazard == "ice":
        vals["c"] = r.choice([200, 300, 400])
    regions = _join(r.sample(_W_REGION, r.randint(1, 3)))
    start = r.choice(["00:00", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00"])
    out = [f"{colour} weather warning for {hazard}",
           f"Valid from {start} {_w_date(c)} until {r.choice(['06:00', '12:00', '18:00', '23:59'])} {_w_date(c, r.randint(1, 2))}. "
           f"Areas affected: {regions}."]
    if colour == "Red":
        out.append("Danger to life is likely. Take action now to protect yourself and your property.")
    out.append(amount.format(**vals))
    k = r.randint(2, 4)
    head = r.choice(["What to expect:", "Likely impacts:", "What to expect"])
    out.append(head + "\n" + "\n".join(f"- {x}" for x in r.sample(impacts, min(k, len(impacts)))))
    if r.random() < 0.8:
        out.append(r.choice(["What you should do:", "Advice:", "Be prepared:"]) + "\n" +
                   "\n".join(f"- {x}." for x in r.sample(advice, min(r.randint(2, 3), len(advice)))))
    return out


def _w_outlook(r: random.Random, c: dict) -> list[str]:
    place = _w_place(r)
    out = [r.choice([f"Five-day forecast for {place}", f"{place}: the week ahead", f"{place} outlook",
                     f"Your {r.randint(3, 5) if r.random() < 0.5 else 5}-day weather for {place}"])]
    lo, hi = c["lo"], c["hi"]
    rows, short = [], r.random() < 0.5
    for i in range(r.randint(3, 5)):
        hi_i = hi + r.randint(-3, 3)
        lo_i = min(lo + r.randint(-2, 2), hi_i - 3)
        sky = _cap(r.choice(c["skies"] + _W_SKY))
        pct = _w_rain_chance(r, sky)
        d = r.choice(_W_DIRS)
        w = r.randint(5, 45)
        if short:
            rows.append(f"{_DAYS[(c['wd'] + i) % 7][:3]} {c['day'] + i}: {sky}. {hi_i} °C / {lo_i} °C. Wind {_W_ABBR[d]} "
                        f"{_w_speed(c, w)}. Chance of rain {pct}%.")
        else:
            rows.append(f"{_DAYS[(c['wd'] + i) % 7]}: {sky.lower() if sky[1:2].islower() else sky}, high {hi_i} °C, low "
                        f"{lo_i} °C, {d}erly wind {_w_speed(c, w)}, rain chance {pct}%")
    out.append("\n".join(rows))
    extras = [f"UV index: {r.randint(1, 3) if c['season'] == 'winter' else r.randint(3, 9)}",
              f"Pollen: {r.choice(['low', 'moderate', 'high', 'very high'])} ({r.choice(['grass', 'tree', 'weed', 'birch'])})",
              f"Sunrise {r.randint(5, 8)}:{r.randint(0, 59):02d}, sunset {r.randint(16, 21)}:{r.randint(0, 59):02d}",
              f"Air quality: {r.choice(['low risk', 'moderate', 'good', 'high in the afternoon'])}",
              f"Pressure {c['hpa']} hPa, {r.choice(['rising slowly', 'falling slowly', 'steady', 'falling more quickly', 'rising more quickly'])}"]
    out.append("\n".join(r.sample(extras, r.randint(1, 3))))
    return out


def _w_broadcast(r: random.Random, c: dict) -> list[str]:
    regs = r.sample(_W_REGION, 3)
    s = [f"{r.choice(_W_OPEN)}. {r.choice(_W_CHAT)}.",
         f"For {regs[0]}, the day {r.choice(['starts', 'begins', 'opens'])} with {_w_sky(r, c)}, and "
         f"{r.choice(['that spreads', 'that moves', 'that edges'])} towards {regs[1]} through the "
         f"{r.choice(['morning', 'afternoon', 'day'])}, {r.choice(_W_TIP)}.",
         f"Further {r.choice(['south', 'east', 'north', 'west'])}, {regs[2]} {r.choice(['should see', 'can expect', 'will get'])} "
         f"{_w_sky(r, c)}, with temperatures {r.choice(['peaking at', 'reaching', 'getting up to', 'struggling to'])} "
         f"{c['hi']} degrees.",
         f"{r.choice(['Tonight', 'Overnight', 'Later tonight'])} it {r.choice(['turns', 'becomes', 'stays'])} "
         f"{r.choice(['chilly', 'mild', 'cold', 'muggy', 'fresh', 'damp'])}, down to {c['lo']} degrees in "
         f"{r.choice(['rural spots', 'the countryside', 'towns and cities', 'sheltered glens'])}.",
         f"{r.choice(['Looking ahead', 'For the rest of the week', 'Into the weekend', 'Beyond that'])}, "
         f"{r.choice(['it stays unsettled', 'high pressure builds', 'a more settled spell arrives', 'the wind picks up again', 'showers become fewer'])}"
         f"{r.choice(['.', ', but there is plenty of uncertainty.', ', so stay tuned.', '. That is all from me.'])}"]
    if r.random() < 0.5:
        s.insert(2, f"The wind is {_w_wind(r, c)}{r.choice(['.', ', so it will feel colder than the numbers suggest.', ', strongest on the coasts.'])}")
    return [" ".join(s)] if r.random() < 0.5 else [" ".join(s[:2]), " ".join(s[2:])]


def _w_climate(r: random.Random, c: dict) -> list[str]:
    place = _w_place(r)
    year = r.randint(1998, 2031)
    mean = round(r.uniform((c["lo"] + c["hi"]) / 2 - 2, (c["lo"] + c["hi"]) / 2 + 2), 1)
    anom = round(r.uniform(-2.5, 3.0), 1)
    pct = r.randint(25, 240)
    days = r.randint(3, 26)
    d1, d2 = sorted(r.sample(range(1, 29), 2))
    notes = [x for x in _W_NOTE if not ("dry fortnight" in x and pct > 110 or "wettest" in x and pct < 130)]
    note = r.choice(notes).format(y0=r.randint(1870, 1960), d1=_ordinal(d1), d2=_ordinal(d2), g=r.randint(80, 140),
                                    mm=r.randint(20, 60), cm=r.randint(3, 30))
    comp = "above" if anom > 0 else "below" if anom < 0 else "equal to"
    out = [f"{c['month']} {year} at {place}: climate summary",
           f"Mean temperature {mean} °C, {abs(anom)} °C {comp} the 1991-2020 average. Rainfall {round(pct * r.uniform(0.4, 1.2))} mm "
           f"({pct}% of average), with {days} days of 1 mm or more. Sunshine {r.randint(20, 260)} hours.",
           f"The highest temperature, {round(c['hi'] + r.uniform(0, 4), 1)} °C, was recorded on the {_ordinal(d2)}; the "
           f"lowest, {round(c['lo'] - r.uniform(0, 4), 1)} °C, on the {_ordinal(d1)}."]
    out.append(f"{r.choice(['The month is remembered for', 'Notable events included', 'The month featured', 'Highlights:'])} {note}.")
    if r.random() < 0.5:
        out.append(f"{r.choice(['Overall', 'In summary', 'Taken as a whole'])}, a "
                   f"{r.choice(['warm', 'cold', 'wet', 'dry', 'dull', 'sunny', 'changeable', 'stormy'])} and "
                   f"{r.choice(['unsettled', 'quiet', 'blustery', 'calm', 'mild', 'bright'])} month.")
    return out


def _w_mountain(r: random.Random, c: dict) -> list[str]:
    area = _w_range(r)
    summit = min(c["hi"] - r.randint(5, 10), c["lo"] + 2)
    wind = r.randint(20, 110)
    fl = r.choice(["above the summits", f"{r.randint(4, 16) * 100} m", f"{r.randint(4, 16) * 100} m, lowering later"])
    chill = summit - (wind // 8)
    head = r.choice(["strong winds on the tops", "cloud-free summits likely", "poor visibility in hill fog",
                     "snow on higher slopes", "a fine day for the hills", "showers merging into persistent rain",
                     "severe wind chill on ridges"])
    clear = r.choice([70, 80, 90] if head in ("cloud-free summits likely", "a fine day for the hills") else
                     [5, 10, 20] if head in ("poor visibility in hill fog", "showers merging into persistent rain") else
                     [10, 20, 30, 50, 70])
    out = [f"Mountain weather forecast for {area}, {_w_date(c)}",
           f"Headline: {_cap(head)}.",
           f"Wind at 900 m: {_cap(c['dir'])}erly {_w_speed(c, wind)}, gusts {_w_speed(c, wind + r.randint(15, 40))}"
           f"{', making walking arduous on exposed ridges' if wind > 50 else ''}.",
           f"Cloud base: {r.randint(3, 12) * 100}-{r.randint(13, 20) * 100} m{r.choice(['', ', lifting in the afternoon', ', lowering from the west later'])}. "
           f"Chance of cloud-free summits: {clear}%.",
           f"Temperature at 900 m: {summit} °C, feeling like {chill} °C in the wind. Freezing level: {fl}."]
    if r.random() < 0.6:
        out.append(f"Visibility: {r.choice(_W_VIS)}. {r.choice(['Navigation will be challenging in cloud.', 'Ground is saturated; streams are in spate.', 'Snow cover is patchy above 800 m.', 'Ice axe and crampons needed on north-facing gullies.', 'Take extra water on long routes.'])}")
    return out


_W_LAYOUTS = [_w_general, _w_marine, _w_warning, _w_outlook, _w_broadcast, _w_climate, _w_mountain]


def _make_weather(r: random.Random) -> tuple[str, str]:
    layout = r.choice(_W_LAYOUTS)
    c = _w_context(r)
    return layout.__name__[3:], "\n\n".join(x.strip() for x in layout(r, c) if x.strip())


def generate_weather(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct weather bulletins (7 layouts), deterministic in ``(n, seed)``."""
    return [doc for _, doc in _collect(n, seed, _make_weather, "weather")]


# ----------------------------------------------------------------------------------------------- recipes
# Savoury dishes are a family (traybake, soup, stir-fry, curry, pasta, salad, stew, frittata, grain bowl) crossed with
# a main ingredient and a flavour profile; bakes (loaf cake, muffins, crumble, cookies, pancakes) with a fruit or
# flavouring. Each family has its own method; quantities are metric, metric with imperial, or US cups and spoons, one
# system per recipe; oven temperatures in °C (with °F or gas mark in some styles). Titles, intros and tips are drawn
# from the pools below.
_R_MAINS = {  # main -> (kind, amount in g for 4, prep phrase)
    "chicken thighs": ("meat", 700, "boneless, skin-on"), "chicken breasts": ("meat", 600, "cut into strips"),
    "salmon fillets": ("fish", 500, "skin on"), "cod loins": ("fish", 500, "patted dry"),
    "king prawns": ("fish", 350, "peeled"), "pork shoulder": ("meat", 800, "cut into 3 cm chunks"),
    "beef mince": ("meat", 500, "5% fat"), "lamb neck fillet": ("meat", 600, "trimmed and sliced"),
    "firm tofu": ("veg", 400, "pressed and cubed"), "chickpeas": ("veg", 480, "drained and rinsed"),
    "red lentils": ("veg", 250, "rinsed"), "black beans": ("veg", 480, "drained"),
    "cauliflower": ("veg", 800, "broken into florets"), "sweet potatoes": ("veg", 750, "cut into wedges"),
    "aubergines": ("veg", 600, "cut into chunks"), "mushrooms": ("veg", 500, "thickly sliced"),
    "butternut squash": ("veg", 900, "peeled and diced"), "halloumi": ("veg", 250, "sliced"),
    "paneer": ("veg", 400, "cubed"), "smoked haddock": ("fish", 400, "skinned"),
    "duck legs": ("meat", 800, "skin pricked"), "turkey mince": ("meat", 500, "broken up"),
    "mackerel fillets": ("fish", 400, "pin-boned"), "tempeh": ("veg", 300, "thinly sliced"),
    "cannellini beans": ("veg", 480, "drained"), "puy lentils": ("veg", 250, "rinsed"),
    "squid": ("fish", 400, "cleaned and cut into rings"), "pork sausages": ("meat", 450, "skins removed"),
    "chorizo": ("meat", 200, "diced"), "sea bass fillets": ("fish", 450, "scored"),
    "leftover roast chicken": ("meat", 400, "shredded"), "broad beans": ("veg", 300, "double-podded"),
}
_R_VEG = _s("red onion|leek|courgette|red pepper|yellow pepper|fennel bulb|carrot|celery stick|spinach|kale|cherry tomatoes|"
            "broccoli|green beans|peas|sweetcorn|pak choi|spring onions|baby potatoes|parsnip|beetroot|cabbage|asparagus|"
            "mangetout|radishes|cucumber|rocket|savoy cabbage|celeriac|new potatoes|shallot|swede|chard|watercress|"
            "okra|edamame beans|runner beans|artichoke hearts|tenderstem broccoli|butter beans|samphire")
_R_COUNTED = {"red onion": "red onions", "leek": "leeks", "courgette": "courgettes", "red pepper": "red peppers",
              "yellow pepper": "yellow peppers", "fennel bulb": "fennel bulbs", "carrot": "carrots", "celery stick":
              "celery sticks", "parsnip": "parsnips", "beetroot": "beetroots", "cucumber": "cucumbers", "shallot": "shallots",
              "pak choi": "heads of pak choi", "cabbage": "small cabbages", "savoy cabbage": "small savoy cabbages",
              "celeriac": "small celeriacs", "spring onions": "bunches of spring onions"}
_R_CUTS = _s("chopped|sliced|diced|cut into chunks|finely sliced|roughly chopped|thinly sliced")
_R_AROMA = {  # aromatic -> how much and how prepared (for 4)
    "lemon zest": "finely grated zest of 1 lemon", "garlic cloves": "{n} garlic cloves, {how}",
    "dried oregano": "1 tsp dried oregano", "smoked paprika": "2 tsp smoked paprika", "ground cumin": "1 tsp ground cumin",
    "fresh ginger": "a thumb-sized piece of fresh ginger, grated", "chilli flakes": "1/2 tsp chilli flakes",
    "harissa paste": "2 tbsp harissa paste", "ground coriander": "1 tsp ground coriander", "basil pesto": "3 tbsp basil pesto",
    "pine nuts": "2 tbsp pine nuts, toasted", "lemongrass": "1 lemongrass stalk, bruised",
    "red chilli": "1 red chilli, finely chopped", "white miso": "2 tbsp white miso", "rice vinegar": "1 tbsp rice vinegar",
    "honey": "1 tbsp honey", "wholegrain mustard": "1 tbsp wholegrain mustard", "maple syrup": "2 tbsp maple syrup",
    "fresh thyme": "a few sprigs of fresh thyme", "chipotle paste": "1 tbsp chipotle paste", "za'atar": "2 tbsp za'atar",
    "sumac": "1 tsp sumac", "garam masala": "2 tsp garam masala", "ground turmeric": "1 tsp ground turmeric",
    "fresh rosemary": "2 sprigs of fresh rosemary, leaves picked", "black pepper": "1/2 tsp cracked black pepper",
    "gochujang": "2 tbsp gochujang", "sesame oil": "1 tbsp toasted sesame oil", "green curry paste": "3 tbsp green curry paste",
    "fish sauce": "1 tbsp fish sauce", "lime leaves": "4 lime leaves", "tahini": "3 tbsp tahini",
    "sun-dried tomatoes": "6 sun-dried tomatoes, chopped", "dried basil": "1 tsp dried basil"}
_R_SAUCY = ("lemon juice", "soy sauce")  # liquids that also work as a dressing
_R_FLAVOURS = {  # profile -> (aromatics/spices, liquid or sauce, finishing herb or garnish)
    "lemon and herb": (_s("lemon zest|garlic cloves|dried oregano"), "lemon juice", "chopped parsley"),
    "smoky paprika": (_s("smoked paprika|ground cumin|garlic cloves"), "tomato passata", "soured cream"),
    "ginger and soy": (_s("fresh ginger|garlic cloves|chilli flakes"), "soy sauce", "sliced spring onions"),
    "harissa": (_s("harissa paste|ground coriander|garlic cloves"), "chopped tomatoes", "chopped mint"),
    "pesto": (_s("basil pesto|garlic cloves|pine nuts"), "vegetable stock", "grated parmesan"),
    "coconut and lime": (_s("lemongrass|fresh ginger|red chilli"), "coconut milk", "lime wedges"),
    "miso": (_s("white miso|rice vinegar|honey"), "dashi or vegetable stock", "toasted sesame seeds"),
    "maple and mustard": (_s("wholegrain mustard|maple syrup|fresh thyme"), "cider", "chopped chives"),
    "chipotle": (_s("chipotle paste|ground cumin|dried oregano"), "black bean liquor or stock", "coriander leaves"),
    "za'atar": (_s("za'atar|sumac|garlic cloves"), "lemon juice", "pomegranate seeds"),
    "garam masala": (_s("garam masala|ground turmeric|fresh ginger"), "chopped tomatoes", "coriander leaves"),
    "rosemary and garlic": (_s("fresh rosemary|garlic cloves|black pepper"), "white wine", "flaky sea salt"),
    "gochujang": (_s("gochujang|garlic cloves|sesame oil"), "soy sauce", "kimchi"),
    "Thai green": (_s("green curry paste|fish sauce|lime leaves"), "coconut milk", "Thai basil"),
    "tahini": (_s("tahini|garlic cloves|ground cumin"), "lemon juice", "toasted seeds"),
    "sun-dried tomato": (_s("sun-dried tomatoes|garlic cloves|dried basil"), "vegetable stock", "torn basil"),
}
_R_SAVOURY = ("traybake", "soup", "stir-fry", "curry", "pasta", "salad", "stew", "frittata", "grain bowl")
_R_SWEET = ("loaf cake", "muffins", "crumble", "cookies", "pancakes")
_R_FRUIT = _s("apples|pears|blueberries|raspberries|rhubarb|bananas|plums|blackberries|cherries|apricots|lemon|orange|"
              "dark chocolate|stem ginger|carrot|pumpkin")
_R_CRUMBLE_FRUIT = _s("apples|pears|rhubarb|plums|blackberries|cherries|apricots|blueberries|raspberries")
_R_FRUIT_AS = {"lemon": "finely grated zest and juice of 1 lemon", "orange": "finely grated zest and juice of 1 orange",
               "dark chocolate": "{q} dark chocolate, chopped", "stem ginger": "3 balls of stem ginger, chopped",
               "carrot": "{q} carrot, grated", "pumpkin": "{q} pumpkin purée", "bananas": "2 ripe bananas, mashed",
               "apples": "{q} apples, peeled and diced", "pears": "{q} pears, peeled and diced"}
_R_SPICE = _s("ground cinnamon|mixed spice|ground ginger|vanilla extract|cardamom|nutmeg|almond extract")
_R_STARCH = {"pasta": _s("spaghetti|penne|rigatoni|linguine|orzo|fusilli|orecchiette"),
             "grain": _s("brown rice|quinoa|pearl barley|bulgur wheat|farro|couscous|freekeh|basmati rice"),
             "noodle": _s("egg noodles|rice noodles|udon noodles|soba noodles")}
_R_OCCASION = _s("on a busy weeknight|when friends drop round|for Sunday lunch|when the fridge is nearly empty|for a lazy "
                 "weekend brunch|for packed lunches|after a long day at work|on cold, dark evenings|for a summer barbecue|"
                 "when I need something comforting|for a crowd|for batch cooking")
_R_WHO = _s("my grandmother|my flatmate|a friend from university|my neighbour|my dad|my aunt|a chef I once worked with|"
            "my partner|my kids|a market trader")
_R_ADJ = _s("easy|quick|one-pan|weeknight|crispy|creamy|hearty|light|zesty|sticky|simple|spiced|golden|fragrant|rustic|"
            "speedy|comforting|smoky")
_R_WHY = _s("Roasting at a high heat caramelises the edges, which is where most of the flavour comes from.|Salting the "
            "{main} early seasons it all the way through.|Adding the {veg} late keeps some bite and colour.|A splash of "
            "acid at the end balances the richness.|Browning in batches keeps the pan hot, so you get colour rather "
            "than grey, stewed meat.|Blooming the spices in oil releases flavours that water alone cannot.|Resting the "
            "dish for five minutes lets the sauce thicken and cling.|Cutting everything to a similar size means it all "
            "cooks at the same rate.|Starting the grains in cold water stops them turning to mush.|Finishing with fresh "
            "herbs adds a bright note that dried ones cannot give.")
_R_DIET = _s("vegetarian|vegan|gluten-free|dairy-free|high-protein|freezer-friendly|nut-free|budget-friendly|low-sugar")
_R_TIPS = _s("Toast the spices in a dry pan first for a deeper flavour.|Don't crowd the pan, or everything will steam "
             "instead of browning.|Season at the end, once the sauce has reduced.|Leftovers keep in the fridge for up to "
             "three days.|This freezes well for up to three months; defrost overnight in the fridge.|Swap the {veg} for "
             "whatever is in season.|A squeeze of lemon just before serving lifts the whole dish.|Make it ahead: the "
             "flavours improve overnight.|If you like heat, add a pinch of chilli flakes with the garlic.|Use a "
             "thermometer: chicken is cooked at 75 °C in the thickest part.|Line the tin with baking paper to make "
             "washing up easier.|Room-temperature eggs and butter give a lighter crumb.|Weigh the flour rather than "
             "using cups for the most reliable result.|Rest the batter for ten minutes while the pan heats.|A cast-iron "
             "pan holds its heat better than a thin one.|Taste and adjust: a pinch of sugar can round off a sharp tomato "
             "sauce.|Pat everything dry before it goes into the pan so it fries rather than steams.|Grate frozen butter "
             "straight into the flour for a crumblier topping.|Keep a kettle of hot water nearby to loosen the sauce.|"
             "If your oven runs hot, check ten minutes early.|Leftover herbs can be blitzed with oil and frozen in ice "
             "cube trays.|Warm the plates: food stays hot for longer.")
_R_SERVE = _s("crusty bread|steamed rice|a crisp green salad|warm flatbreads|buttery mash|a spoonful of yoghurt|"
              "garlic bread|noodles|roast potatoes|a fried egg on top|pickled red onions|charred tortillas|a dollop of "
              "crème fraîche|polenta|a tangle of dressed leaves|sourdough toast|cucumber raita|jacket potatoes")


def _quarters(x: float) -> str:
    q = max(1, round(x * 4))
    whole, frac = divmod(q, 4)
    return f"{whole if whole else ''} {['', '1/4', '1/2', '3/4'][frac]}".strip()


def _r_amount(r: random.Random, g: float, unit: str, system: str, by_volume: bool = False) -> str:
    """A quantity in the recipe's measuring system: g or ml (metric), metric with ounces in brackets ("both"), or US
    measures ("us": pounds and ounces for meat, fish and vegetables, cups for flour, sugar, grains and liquids)."""
    g = max(5, int(round(g / (5 if g < 100 else 25))) * (5 if g < 100 else 25))
    if system == "metric":
        return f"{g} {unit}"
    if system == "both":
        oz = g / 28.35
        return f"{g} {unit} ({round(oz) if oz >= 2 else round(oz, 1)} {'oz' if unit == 'g' else 'fl oz'})"
    if unit == "g" and not by_volume:
        oz = g / 28.35
        return f"{round(oz)} oz" if oz < 16 else f"{_quarters(oz / 16)} lb"
    cups = g / (240 if unit == "ml" else 130)
    if cups < 0.2:
        return f"{max(1, round(g / 15))} tbsp"
    q = _quarters(cups)
    return q + (" cup" if cups <= 1.1 else " cups")


def _r_oven(r: random.Random, c: int, style: str) -> str:
    gas = {160: 3, 170: 3, 180: 4, 190: 5, 200: 6, 210: 6, 220: 7}
    if style == "us":
        return f"{round(c * 9 / 5 + 32, -1):.0f} °F"
    return f"{c} °C" + (f" ({c - 20} °C fan, gas mark {gas.get(c, 5)})" if style == "both" else "")


def _r_savoury(r: random.Random, system: str) -> dict:
    fam = r.choice(_R_SAVOURY)
    main = r.choice(list(_R_MAINS))
    kind, grams, prep = _R_MAINS[main]
    flav = r.choice(list(_R_FLAVOURS))
    spices, liquid, garnish = _R_FLAVOURS[flav]
    veg = r.sample(_R_VEG, r.randint(2, 3))
    serves = r.choice([2, 4, 4, 4, 6])
    scale = serves / 4
    oven = r.choice([190, 200, 220])
    starch = r.choice(_R_STARCH["pasta"] if fam == "pasta" else _R_STARCH["noodle"] if fam == "stir-fry" and r.random() < 0.6
                      else _R_STARCH["grain"])
    ing = [f"{_r_amount(r, grams * scale, 'g', system)} {main}, {prep}"]
    for v in veg:
        if v in _R_COUNTED:
            k = r.choice([1, 2]) if serves <= 4 else r.choice([2, 3])
            one = {"spring onions": "bunch of spring onions", "pak choi": "head of pak choi"}.get(v, v)
            ing.append(f"{k} {one if k == 1 else _R_COUNTED[v]}, {r.choice(_R_CUTS)}")
        else:
            ing.append(f"{_r_amount(r, r.choice([100, 150, 200, 250, 300]) * scale, 'g', system)} {v}")
    ing += [_R_AROMA[x].format(n=r.choice([2, 3, 4]), how=r.choice(["crushed", "finely chopped", "sliced"])) for x in spices]
    liq, sauce = liquid, liquid
    if fam in ("soup", "stew", "curry"):
        if liquid in _R_SAUCY or liquid in ("white wine", "cider"):
            liq = r.choice(["vegetable stock", "chicken stock"] if kind == "meat" else ["vegetable stock"])
        ing.append(f"{_r_amount(r, r.choice([400, 500, 750, 1000]) * scale, 'ml', system)} {liq}")
    elif fam in ("stir-fry", "salad", "grain bowl", "traybake"):
        sauce = liquid if liquid in _R_SAUCY else r.choice(["olive oil", "lemon juice", "red wine vinegar"])
        ing.append(f"{r.choice(['2 tbsp', '3 tbsp', '1 tbsp'])} {sauce}")
    if fam in ("pasta", "stir-fry", "salad", "grain bowl", "curry", "stew"):
        ing.append(f"{_r_amount(r, r.choice([200, 250, 300, 350]) * scale, 'g', system, by_volume=True)} {starch}")
    if fam == "frittata":
        ing.append(f"{max(2, round(8 * scale))} large eggs")
        ing.append(f"{_r_amount(r, 80 * scale, 'g', system)} {r.choice(['feta', 'cheddar', 'goat cheese', 'gruyere', 'parmesan'])}, {r.choice(['crumbled', 'grated'])}")
    fat = r.choice(["olive oil", "rapeseed oil", "vegetable oil", "butter"])
    ing.append(f"{r.choice(['2 tbsp', '1 tbsp'] + (['a glug of'] if fat.endswith('oil') else []))} {fat}")
    ing.append(f"{garnish}, to serve")
    cook_verb = {"meat": "brown", "fish": "sear", "veg": "fry"}[kind]
    v = veg[0]
    steps = {
        "traybake": [f"Heat the oven to {_r_oven(r, oven, system)}.",
                     f"Toss the {main} and {_join(veg)} with the oil, {_join(spices)} and a good pinch of salt in a large roasting tin.",
                     f"Spread everything out in a single layer and roast for {r.randint(25, 45)} minutes, turning halfway, until golden at the edges.",
                     f"Drizzle over the {sauce} and return to the oven for {r.randint(5, 10)} minutes."],
        "soup": [f"Warm the oil in a large saucepan over a medium heat and soften the {_join(veg)} for {r.randint(8, 12)} minutes.",
                 f"Stir in the {_join(spices)} and cook for a minute until fragrant.",
                 f"Add the {main} and the {liq}, bring to the boil, then simmer for {r.randint(15, 30)} minutes.",
                 r.choice(["Blend until smooth, adding a splash of water if it is too thick.", "Blend half the soup and stir it back in for a chunky texture.", "Leave it chunky and season to taste."])],
        "stir-fry": [f"Cook the {starch} according to the packet instructions, then drain and toss with a little oil.",
                     f"Heat a wok until smoking, add the oil and {cook_verb} the {main} for {r.randint(3, 6)} minutes, then lift out.",
                     f"Stir-fry the {_join(veg)} with the {_join(spices)} for {r.randint(2, 4)} minutes, keeping everything moving.",
                     f"Return the {main} to the wok with the {starch} and the {sauce}, toss for a minute and take off the heat."],
        "curry": [f"Heat the oil in a heavy pan and cook the {v} for {r.randint(6, 10)} minutes until soft.",
                  f"Add the {_join(spices)} and cook, stirring, for two minutes.",
                  f"Add the {main}, stir to coat, then pour in the {liq} and simmer gently for {r.randint(20, 40)} minutes.",
                  f"Meanwhile, cook the {starch}. Stir the remaining vegetables into the curry for the last five minutes."],
        "pasta": [f"Bring a large pan of salted water to the boil and cook the {starch} until al dente, saving a mugful of the cooking water.",
                  f"Meanwhile, {cook_verb} the {main} in the oil for {r.randint(4, 8)} minutes, then add the {_join(veg)}.",
                  f"Stir in the {_join(spices)} and a ladle of pasta water, and let it bubble into a glossy sauce.",
                  f"Toss the drained {starch} through the sauce, loosening with more water if needed."],
        "salad": [f"Cook the {starch}, drain well and spread out on a tray to cool.",
                  f"{_cap(cook_verb)} the {main} in a hot griddle pan for {r.randint(3, 8)} minutes until charred.",
                  f"Whisk the {sauce} with the {_join(spices)}, a pinch of salt and a little oil to make a dressing.",
                  f"Toss the {starch} with the {_join(veg)} and the dressing, then top with the {main}."],
        "stew": [f"Heat the oven to {_r_oven(r, 160, system)}.",
                 f"{_cap(cook_verb)} the {main} in batches in a casserole dish, then set aside.",
                 f"Soften the {_join(veg)} in the same pan, stir in the {_join(spices)}, then return the {main} and add the {liq}.",
                 f"Cover and cook in the oven for {r.choice(['1 1/2', '2', '2 1/2'])} hours, adding the {starch} for the last 40 minutes."],
        "frittata": [f"Heat the grill to high. Warm the oil in an ovenproof frying pan.",
                     f"Fry the {main} and {_join(veg)} for {r.randint(5, 8)} minutes, then stir in the {_join(spices)}.",
                     "Beat the eggs with a pinch of salt and pepper, pour into the pan and scatter over the cheese.",
                     f"Cook over a low heat for {r.randint(6, 10)} minutes until almost set, then finish under the grill until puffed and golden."],
        "grain bowl": [f"Rinse the {starch} and simmer in plenty of water until tender, about {r.randint(12, 30)} minutes.",
                       f"{_cap(cook_verb)} the {main} with the {_join(spices)} until golden.",
                       f"Quickly cook the {_join(veg)}, or slice them thinly and leave them raw.",
                       f"Divide the {starch} between bowls, top with the {main} and vegetables, and spoon over the {sauce}."],
    }[fam]
    steps.append(f"Finish with the {garnish} and serve{r.choice(['', ' straight away', ' warm', ' hot'])}{r.choice(['', f' with {r.choice(_R_SERVE)}'])}.")
    title = r.choice([f"{_cap(flav)} {main} {fam}", f"{_cap(r.choice(_R_ADJ))} {flav} {main} {fam}",
                      f"{_cap(main)} {fam} with {garnish}", f"{_cap(r.choice(_R_ADJ))} {main} and {veg[0]} {fam}"])
    prep_min, cook_min = r.choice([10, 15, 20, 25]), {"stew": 150, "soup": 35, "traybake": 45}.get(fam, r.choice([20, 25, 30, 40]))
    return {"title": title, "fam": fam, "ing": ing, "steps": steps, "serves": serves, "prep": prep_min, "cook": cook_min,
            "main": main, "veg": veg[0], "flav": flav}


def _r_sweet(r: random.Random, system: str) -> dict:
    fam = r.choice(_R_SWEET)
    fruit = r.choice(_R_CRUMBLE_FRUIT if fam == "crumble" else _R_FRUIT)
    spice = r.choice(_R_SPICE)
    oven = r.choice([170, 180, 190])
    a = lambda g, u="g": _r_amount(r, g, u, system, by_volume=True)  # noqa: E731

    def fr(g: int) -> str:
        return _R_FRUIT_AS.get(fruit, "{q} " + fruit).format(q=_r_amount(r, g, "g", system))

    base = {
        "loaf cake": [f"{a(175)} softened butter", f"{a(175)} caster sugar", "3 large eggs", f"{a(200)} self-raising flour",
                      fr(200), f"1 tsp {spice}", f"{a(60, 'ml')} milk"],
        "muffins": [f"{a(300)} plain flour", "2 tsp baking powder", f"{a(150)} light brown sugar", "2 eggs",
                    f"{a(120, 'ml')} vegetable oil", f"{a(200, 'ml')} buttermilk", fr(150), f"1/2 tsp {spice}"],
        "crumble": [fr(800),
                    f"{a(50)} golden caster sugar", f"1 tsp {spice}", f"{a(150)} plain flour", f"{a(100)} cold butter, diced",
                    f"{a(75)} demerara sugar", f"{a(50)} rolled oats"],
        "cookies": [f"{a(125)} unsalted butter, melted", f"{a(100)} light brown sugar", f"{a(75)} caster sugar", "1 egg",
                    f"{a(225)} plain flour", "1/2 tsp bicarbonate of soda", fr(150), f"1 tsp {spice}"],
        "pancakes": [f"{a(200)} self-raising flour", "1 tsp baking powder", "1 tbsp caster sugar", "2 eggs",
                     f"{a(250, 'ml')} milk", f"{a(25)} butter, melted, plus extra for the pan", fr(150)],
    }[fam]
    steps = {
        "loaf cake": [f"Heat the oven to {_r_oven(r, oven, system)} and line a 900 g (2 lb) loaf tin.",
                      "Beat the butter and sugar until pale and fluffy, then beat in the eggs one at a time.",
                      f"Fold in the flour and {spice}, then the milk and the {fruit}.",
                      f"Scrape into the tin and bake for {r.randint(45, 60)} minutes, until a skewer comes out clean.",
                      "Cool in the tin for ten minutes, then turn out onto a wire rack."],
        "muffins": [f"Heat the oven to {_r_oven(r, oven + 10, system)} and line a 12-hole muffin tin with cases.",
                    f"Mix the flour, baking powder, sugar and {spice} in a large bowl.",
                    "Whisk the eggs, oil and buttermilk together, then stir into the dry ingredients until only just combined.",
                    f"Fold through the {fruit}, divide between the cases and bake for {r.randint(18, 25)} minutes until risen and golden."],
        "crumble": [f"Heat the oven to {_r_oven(r, oven, system)}.",
                    f"Toss the fruit with the caster sugar and {spice}, and tip into a baking dish.",
                    "Rub the butter into the flour until it looks like breadcrumbs, then stir in the demerara sugar and oats.",
                    f"Scatter the topping over the fruit and bake for {r.randint(30, 45)} minutes until bubbling at the edges."],
        "cookies": [f"Heat the oven to {_r_oven(r, oven, system)} and line two baking trays.",
                    "Beat the melted butter with both sugars, then beat in the egg.",
                    f"Stir in the flour, bicarbonate of soda and {spice}, then the {fruit}.",
                    f"Roll into {r.choice([12, 16, 18, 20])} balls, space well apart and bake for {r.randint(9, 13)} minutes; they firm up as they cool."],
        "pancakes": ["Whisk the flour, baking powder and sugar together in a bowl.",
                     "Beat the eggs with the milk and melted butter, then whisk into the dry ingredients to make a thick batter.",
                     f"Heat a knob of butter in a non-stick pan and drop in spoonfuls of batter, scattering a few pieces of {fruit} onto each.",
                     f"Cook for {r.randint(1, 3)} minutes until bubbles appear, flip and cook for a minute more."],
    }[fam]
    title = r.choice([f"{_cap(fruit)} {fam}", f"{_cap(r.choice(_R_ADJ))} {fruit} {fam}", f"{_cap(fruit)} and {spice.split()[-1]} {fam}",
                      f"{_cap(r.choice(['one-bowl', 'easy', 'the best', 'small-batch', 'wholemeal', 'brown butter']))} {fruit} {fam}"])
    serves = {"muffins": 12, "cookies": r.choice([12, 16, 18, 20]), "pancakes": r.choice([2, 4])}.get(fam, r.choice([6, 8, 10]))
    return {"title": title, "fam": fam, "ing": base, "steps": steps, "serves": serves, "prep": r.choice([10, 15, 20]),
            "cook": {"loaf cake": 55, "muffins": 22, "crumble": 40, "cookies": 12, "pancakes": 15}[fam], "main": fruit,
            "veg": fruit, "flav": spice}


def _r_head(rec: dict, r: random.Random) -> str:
    yields = f"Makes {rec['serves']}" if rec["fam"] in ("muffins", "cookies") else f"Serves {rec['serves']}"
    return r.choice([f"{yields} | Prep {rec['prep']} min | Cook {rec['cook']} min",
                     f"{yields}. Prep: {rec['prep']} minutes. Cook: {rec['cook']} minutes.",
                     f"{yields} · Ready in {rec['prep'] + rec['cook']} minutes"])


def _r_tip(r: random.Random, rec: dict) -> str:
    return r.choice(_R_TIPS).format(veg=rec["veg"])


def _r_card(r: random.Random, rec: dict) -> list[str]:
    out = [rec["title"], _r_head(rec, r),
           r.choice(["Ingredients", "Ingredients:", "You will need"]) + "\n" + "\n".join(f"- {x}" for x in rec["ing"]),
           r.choice(["Method", "Method:", "Steps", "Instructions"]) + "\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(rec["steps"], 1))]
    if r.random() < 0.6:
        out.append(f"{r.choice(['Tip', 'Cook’s tip', 'Note'])}: {_r_tip(r, rec)}")
    if r.random() < 0.35:
        kcal = r.randrange(180, 720, 10)
        out.append(f"Per serving: {kcal} kcal, {r.randint(4, 45)} g protein, {r.randint(3, 38)} g fat, "
                   f"{r.randint(8, 80)} g carbohydrate, {r.randint(1, 12)} g fibre.")
    elif r.random() < 0.3:
        out.append(f"Why it works: {r.choice(_R_WHY).format(main=rec['main'], veg=rec['veg'])}")
    return out


def _r_blog(r: random.Random, rec: dict) -> list[str]:
    intro = [f"This {rec['title'].lower()} is what I make {r.choice(_R_OCCASION)}.",
             r.choice([f"{_cap(r.choice(_R_WHO))} first made it for me years ago, and I have been tweaking it ever since.",
                       f"It started as a way to use up a bag of {rec['veg']}, and now it is on repeat in our house.",
                       "It takes very little effort, and most of the time it looks after itself.",
                       f"The {rec['flav']} does most of the work here, so keep everything else simple.",
                       f"It is {r.choice(_R_DIET)} without trying to be, and nobody at the table has ever noticed.",
                       f"I first ate something like it on holiday and spent a whole winter trying to recreate it.",
                       f"My {r.choice(['kids', 'housemates', 'parents', 'colleagues', 'in-laws'])} ask for it at least once a week.",
                       "The trick, as ever, is patience at the start and confidence at the end."]),
             "" if r.random() < 0.4 else r.choice(_R_WHY).format(main=rec["main"], veg=rec["veg"]),
             r.choice(["Scroll down for the full recipe, or read on for my tips.", "Here's how I do it.",
                       "Don't skip the final step: it makes all the difference.", ""])]
    return [" ".join(x for x in intro if x)] + _r_card(r, rec)[:4]


def _r_prose(r: random.Random, rec: dict) -> list[str]:
    ing_text = _join([x.split(",")[0] for x in rec["ing"]])
    return [rec["title"], f"{_r_head(rec, r).split(' |')[0].split('.')[0]}.",
            f"You will need {ing_text}.",
            " ".join(rec["steps"][:2]), " ".join(rec["steps"][2:]),
            _r_tip(r, rec) if r.random() < 0.5 else ""]


def _r_notes(r: random.Random, rec: dict) -> list[str]:
    out = _r_card(r, rec)[:4]
    var = r.sample(["Make it vegetarian by swapping the {main} for chickpeas or halloumi.",
                    "Add a handful of {veg} with the other vegetables.", "Use {flav} in place of the usual seasoning.",
                    "Double the quantities and freeze half in portions.", "Stir through a spoonful of yoghurt for creaminess.",
                    "Top with toasted nuts for crunch.", "For a gluten-free version, check every label carefully."], 2)
    out.append("Variations\n" + "\n".join("- " + v.format(main=rec["main"], veg=r.choice(_R_VEG), flav=r.choice(list(_R_FLAVOURS)))
                                          for v in var))
    out.append(f"Storage: {r.choice(['Keeps in an airtight container for three days.', 'Cool, cover and chill for up to two days.', 'Freeze for up to three months.', 'Best eaten on the day it is made.'])}")
    return out


_R_LAYOUTS = [_r_card, _r_blog, _r_prose, _r_notes]


def _make_recipe(r: random.Random) -> tuple[str, str]:
    system = r.choice(["metric", "metric", "both", "us"])
    rec = _r_sweet(r, system) if r.random() < 0.3 else _r_savoury(r, system)
    layout = r.choice(_R_LAYOUTS)
    return f"{rec['fam']}/{layout.__name__[3:]}", "\n\n".join(x.strip() for x in layout(r, rec) if x.strip())


def generate_recipes(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct recipes (9 savoury and 5 baking families, 4 layouts), deterministic in ``(n, seed)``."""
    return [doc for _, doc in _collect(n, seed, _make_recipe, "recipes")]


GENERATORS: dict[str, Callable[..., list[str]]] = {"dtc-ads": generate_dtc_ads, "instructions": generate_instructions,
                                                   "weather": generate_weather, "recipes": generate_recipes}
