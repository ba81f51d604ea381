"""A realistic synthetic home-improvement catalog for demos, tests and benchmarks.

Products come from a 3-level category tree (department > subcategory > leaf) with
department-specific brands, log-normal prices per leaf (ending in .97 or .99),
category-relevant attributes, Home-Depot-style titles and short descriptions. Output
is deterministic for ``(n, seed)``, and ``generate_products(n, seed)`` is a prefix of
``generate_products(m, seed)`` for ``m > n``.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from catalog.reader import detect_format
from catalog.schema import Product

_BRANDS: dict[str, tuple[str, ...]] = {
    "Tools": ("Voltmax", "Ridgeline", "IronCrest", "Torqwell", "Hartwell Pro"),
    "Outdoors": ("GreenAcre", "Yardline", "Timberpeak", "Fieldcrest", "Sunhaven"),
    "Lighting": ("Lumera", "Brightwell", "Glowhaven", "Arden Lighting", "Halden"),
    "Plumbing": ("Aquaflo", "Claymore", "Rivera Bath", "Pureline", "Stillwater"),
    "Paint": ("Colorcraft", "Truecoat", "Harbor Paint Co.", "Evercoat", "Brushworks"),
    "Flooring": ("Oakhurst", "Stonebridge", "Evergrain", "Floorcraft", "Maple & Main"),
    "Electrical": ("Voltline", "SafeCurrent", "Wireworks", "Arcwell", "Gridpro"),
    "Appliances": ("Frostline", "Northbrook", "Whitford", "Kelden", "Maytrue"),
    "Hardware": ("Keystone", "Ironbolt", "Fastline", "Brassworks"),
}

_PAINT_COLORS = (
    "Ultra Pure White", "Swiss Coffee", "Agreeable Gray", "Repose Gray", "Alabaster",
    "Naval Blue", "Sage Green", "Tricorn Black", "Accessible Beige", "Hale Navy",
    "Sea Salt", "Greige",
)  # fmt: skip
_FIXTURE_FINISHES = ("Matte Black", "Brushed Nickel", "Oil-Rubbed Bronze", "Chrome", "Brushed Gold")
_APPLIANCE_FINISHES = (
    "Stainless Steel",
    "Fingerprint Resistant Stainless",
    "Black Stainless",
    "White",
)


@dataclass(frozen=True)
class _Leaf:
    """One leaf category: how to draw its products.

    Attributes:
        path: Full 3-level category path.
        price: (median, sigma, low, high) of the log-normal price.
        titles: Title templates; fields are ``brand`` and attribute names.
        sentences: Description sentence templates; the first is always used.
        attrs: Attribute name -> choices, drawn independently.
        variants: Correlated attribute bundles. Bundles with the same first key form a
            group; one bundle per group is drawn and merged before ``attrs``.
        scale: Attribute value -> price multiplier (e.g. pack sizes, gallons).

    Fields ending in ``_lower`` or ``_label`` only fill templates and are not stored.
    """

    path: str
    price: tuple[float, float, float, float]
    titles: tuple[str, ...]
    sentences: tuple[str, ...]
    attrs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    variants: tuple[dict[str, Any], ...] = ()
    scale: dict[str, float] = field(default_factory=dict)

    @property
    def department(self) -> str:
        return self.path.split(" > ")[0]


def _variant_groups(leaf: _Leaf) -> tuple[tuple[dict[str, Any], ...], ...]:
    """Split a leaf's variants into groups: bundles whose first key is the same."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for variant in leaf.variants:
        groups.setdefault(next(iter(variant)), []).append(variant)
    return tuple(tuple(g) for g in groups.values())


# fmt: off
_LEAVES: tuple[_Leaf, ...] = (
    # ------------------------------------------------------------------ Tools
    _Leaf(
        "Tools > Power Tools > Drills", (119, 0.35, 39, 449),
        titles=(
            "{brand} {voltage} MAX Cordless {motor} {chuck_size} {tool_type} {kit_label}",
            "{brand} {voltage} Cordless {chuck_size} {tool_type} {kit_label}",
        ),
        sentences=(
            "This {voltage} {motor_lower} {tool_type_lower} has a {chuck_size} keyless chuck for drilling and driving in wood, metal and masonry.",
            "The 2-speed gearbox and LED work light make it easy to work in tight, dark spaces.",
            "Compatible with all {brand} {voltage} batteries.",
        ),
        attrs={
            "voltage": ("12V", "18V", "20V", "20V", "24V"),
            "chuck_size": ("3/8 in.", "1/2 in.", "1/2 in."),
            "kit_label": ("Kit", "Kit with 2 Batteries", "(Tool Only)"),
            "power_source": ("Battery",),
        },
        variants=(
            {"tool_type": "Drill/Driver", "tool_type_lower": "drill/driver"},
            {"tool_type": "Hammer Drill", "tool_type_lower": "hammer drill"},
            {"motor": "Brushless", "motor_lower": "brushless"},
            {"motor": "Compact", "motor_lower": "compact"},
        ),
        scale={"(Tool Only)": 0.6, "Kit with 2 Batteries": 1.3, "12V": 0.7},
    ),
    _Leaf(
        "Tools > Power Tools > Impact Drivers", (129, 0.35, 59, 329),
        titles=(
            "{brand} {voltage} MAX Cordless Brushless 1/4 in. Impact Driver {kit_label}",
            "{brand} {voltage} Cordless 1/4 in. Hex {speed}-Speed Impact Driver {kit_label}",
        ),
        sentences=(
            "Delivers up to {torque} in.-lbs. of torque for driving long screws and lag bolts.",
            "The 1/4 in. hex chuck allows one-handed bit changes.",
            "Compact head length fits between studs and joists.",
        ),
        attrs={
            "voltage": ("12V", "18V", "20V", "20V"),
            "speed": ("3", "4"),
            "torque": ("1,500", "1,825", "2,000", "3,000"),
            "kit_label": ("Kit", "(Tool Only)"),
            "power_source": ("Battery",),
        },
        scale={"(Tool Only)": 0.6, "12V": 0.7},
    ),
    _Leaf(
        "Tools > Power Tools > Circular Saws", (139, 0.35, 49, 349),
        titles=(
            "{brand} {power_label} {blade_diameter} Circular Saw",
            "{brand} {blade_diameter} {power_label} Circular Saw with Laser Guide",
        ),
        sentences=(
            "This {blade_diameter} circular saw makes bevel cuts up to 56 degrees.",
            "Includes a 24-tooth carbide-tipped blade for fast rip and cross cuts.",
            "An electric brake stops the blade in seconds after the trigger is released.",
        ),
        attrs={"blade_diameter": ("6-1/2 in.", "7-1/4 in.", "7-1/4 in.")},
        variants=(
            {"power_source": "Corded Electric", "power_label": "15 Amp Corded", "amperage": "15 Amp"},
            {"power_source": "Corded Electric", "power_label": "13 Amp Corded", "amperage": "13 Amp"},
            {"power_source": "Battery", "power_label": "20V MAX Cordless", "voltage": "20V"},
            {"power_source": "Battery", "power_label": "60V Cordless Brushless", "voltage": "60V"},
        ),
        scale={"60V": 1.6, "13 Amp": 0.7},
    ),
    _Leaf(
        "Tools > Hand Tools > Pliers", (19, 0.45, 6, 79),
        titles=(
            "{brand} {size} {plier_type} Pliers with Cushion Grip",
            "{brand} {piece_count}-Piece {plier_type} Pliers Set",
        ),
        sentences=(
            "Forged {material} {plier_type_lower} pliers with induction-hardened cutting edges.",
            "Cushion grips reduce hand fatigue during all-day use.",
            "Backed by a lifetime warranty.",
        ),
        attrs={
            "size": ("6 in.", "8 in.", "10 in."),
            "piece_count": ("3", "4", "5"),
            "material": ("chrome vanadium steel", "high-carbon steel"),
        },
        variants=(
            {"plier_type": "Needle Nose", "plier_type_lower": "needle nose"},
            {"plier_type": "Lineman's", "plier_type_lower": "lineman's"},
            {"plier_type": "Slip Joint", "plier_type_lower": "slip joint"},
            {"plier_type": "Tongue and Groove", "plier_type_lower": "tongue and groove"},
        ),
    ),
    _Leaf(
        "Tools > Hand Tools > Hammers", (24, 0.4, 8, 89),
        titles=(
            "{brand} {weight} {material} {hammer_type} Hammer",
            "{brand} {weight} {hammer_type} Hammer with Shock-Reduction Grip",
        ),
        sentences=(
            "This {weight} {hammer_type_lower} hammer has a {material_lower} handle.",
            "The magnetic nail starter lets you set nails one-handed.",
            "Balanced for accurate, powerful strikes.",
        ),
        attrs={"weight": ("16 oz.", "20 oz.", "22 oz.", "28 oz.")},
        variants=(
            {"material": "Fiberglass", "material_lower": "fiberglass"},
            {"material": "Steel", "material_lower": "steel"},
            {"material": "Hickory", "material_lower": "hickory"},
            {"hammer_type": "Claw", "hammer_type_lower": "claw"},
            {"hammer_type": "Framing", "hammer_type_lower": "framing"},
            {"hammer_type": "Rip Claw", "hammer_type_lower": "rip claw"},
        ),
    ),
    _Leaf(
        "Tools > Hand Tools > Screwdrivers", (22, 0.45, 6, 69),
        titles=(
            "{brand} {piece_count}-Piece {driver_type} Screwdriver Set",
            "{brand} {driver_type} Multi-Bit Screwdriver with {piece_count} Bits",
        ),
        sentences=(
            "Includes Phillips, slotted and square tips in the most common sizes.",
            "Magnetic tips hold screws in place for easier starts.",
            "Comfortable tri-lobe handles give extra turning power.",
        ),
        attrs={
            "piece_count": ("6", "8", "10", "14"),
            "driver_type": ("Magnetic", "Insulated", "Precision", "Ratcheting"),
        },
    ),
    _Leaf(
        "Tools > Tool Storage > Tool Chests", (349, 0.4, 99, 1299),
        titles=(
            "{brand} {width} {drawers}-Drawer {finish} Rolling Tool Chest",
            "{brand} {width} {drawers}-Drawer Tool Cabinet with Soft-Close Drawers",
        ),
        sentences=(
            "This {width} rolling tool chest has {drawers} ball-bearing drawers.",
            "Each drawer holds up to 100 lbs. and has a liner to protect tools.",
            "Locking casters keep it in place while you work.",
        ),
        attrs={
            "width": ("26 in.", "41 in.", "46 in.", "52 in."),
            "drawers": ("5", "9", "10", "15"),
            "finish": ("Gloss Red", "Matte Black", "Stainless Steel"),
            "material": ("Steel",),
        },
        scale={"26 in.": 0.5, "52 in.": 1.6},
    ),
    # --------------------------------------------------------------- Outdoors
    _Leaf(
        "Outdoors > Garden Tools > Shovels", (34, 0.35, 14, 89),
        titles=(
            "{brand} {handle_length} {material} Handle {shovel_type} Shovel",
            "{brand} {shovel_type} Shovel with {material} Handle and D-Grip",
        ),
        sentences=(
            "A {shovel_type_lower} shovel with a tempered steel blade for digging, edging and moving soil.",
            "The {handle_length} {material_lower} handle resists weather and rot.",
            "A forward-turned step gives extra force when digging in clay.",
        ),
        attrs={"handle_length": ("27 in.", "40 in.", "48 in.")},
        variants=(
            {"material": "Fiberglass", "material_lower": "fiberglass"},
            {"material": "Wood", "material_lower": "wood"},
            {"material": "Steel", "material_lower": "steel"},
            {"shovel_type": "Round Point", "shovel_type_lower": "round point"},
            {"shovel_type": "Square Point", "shovel_type_lower": "square point"},
            {"shovel_type": "Trenching", "shovel_type_lower": "trenching"},
        ),
    ),
    _Leaf(
        "Outdoors > Garden Tools > Pruning Shears", (24, 0.4, 9, 69),
        titles=(
            "{brand} {size} {shear_type} Pruning Shears",
            "{brand} {shear_type} Pruner with {cut} Cutting Capacity",
        ),
        sentences=(
            "{shear_type} pruning shears that cut branches up to {cut} thick.",
            "Non-stick coated blades glide through green wood.",
            "The safety lock keeps the blades closed for storage.",
        ),
        attrs={
            "size": ("8 in.", "8.5 in.", "9 in."),
            "shear_type": ("Bypass", "Anvil", "Ratchet"),
            "cut": ("3/4 in.", "1 in."),
        },
    ),
    _Leaf(
        "Outdoors > Outdoor Power Equipment > Lawn Mowers", (399, 0.3, 179, 1199),
        titles=(
            "{brand} {deck} {engine} {drive} Walk-Behind Lawn Mower",
            "{brand} {deck} {engine} {drive} Lawn Mower with Bagger",
        ),
        sentences=(
            "This {deck} {drive_lower} mower is sized for lawns up to 1/2 acre.",
            "The 3-in-1 design mulches, bags or side-discharges clippings.",
            "Adjust cutting height across 7 positions with a single lever.",
        ),
        attrs={"deck": ("20 in.", "21 in.", "22 in.")},
        variants=(
            {"engine": "170cc Gas", "power_source": "Gas", "drive": "Self-Propelled", "drive_lower": "self-propelled"},
            {"engine": "140cc Gas", "power_source": "Gas", "drive": "Push", "drive_lower": "push"},
            {"engine": "40V Battery", "power_source": "Battery", "voltage": "40V", "drive": "Push", "drive_lower": "push"},
            {"engine": "80V Brushless Battery", "power_source": "Battery", "voltage": "80V", "drive": "Self-Propelled", "drive_lower": "self-propelled"},
        ),
        scale={"Push": 0.75, "80V": 1.4},
    ),
    _Leaf(
        "Outdoors > Outdoor Power Equipment > String Trimmers", (149, 0.35, 59, 399),
        titles=(
            "{brand} {engine} {cut_width} String Trimmer",
            "{brand} {engine} Straight Shaft String Trimmer with {cut_width} Cutting Swath",
        ),
        sentences=(
            "Cuts a {cut_width} swath with a dual-line bump feed head.",
            "A telescoping shaft and adjustable handle fit users of every height.",
            "Attachment-capable: add an edger or a pole saw.",
        ),
        attrs={"cut_width": ("13 in.", "15 in.", "17 in.")},
        variants=(
            {"engine": "25cc 2-Cycle Gas", "power_source": "Gas"},
            {"engine": "40V Cordless", "power_source": "Battery", "voltage": "40V"},
            {"engine": "20V MAX Cordless", "power_source": "Battery", "voltage": "20V"},
        ),
    ),
    _Leaf(
        "Outdoors > Patio Furniture > Patio Chairs", (149, 0.4, 39, 599),
        titles=(
            "{brand} {material} Outdoor {chair_type} in {color} ({pack})",
            "{brand} {color} {material} Patio {chair_type} with {cushion} Cushions",
        ),
        sentences=(
            "Weather-resistant {material_lower} {chair_type_lower} for decks and patios.",
            "Fade-resistant {cushion} cushions are removable for cleaning.",
            "Some assembly required.",
        ),
        attrs={
            "color": ("Black", "Brown", "Gray", "White", "Teak"),
            "pack": ("1-Pack", "2-Pack", "4-Pack"),
            "cushion": ("Beige", "Navy", "Gray", "Sunbrella Canvas"),
        },
        variants=(
            {"material": "Aluminum", "material_lower": "aluminum"},
            {"material": "Resin Wicker", "material_lower": "resin wicker"},
            {"material": "Acacia Wood", "material_lower": "acacia wood"},
            {"chair_type": "Dining Chair", "chair_type_lower": "dining chair"},
            {"chair_type": "Lounge Chair", "chair_type_lower": "lounge chair"},
            {"chair_type": "Adirondack Chair", "chair_type_lower": "Adirondack chair"},
        ),
        scale={"2-Pack": 1.8, "4-Pack": 3.2},
    ),
    _Leaf(
        "Outdoors > Grills > Gas Grills", (449, 0.35, 179, 1499),
        titles=(
            "{brand} {burners}-Burner {fuel_label} Grill in {finish}",
            "{brand} {burners}-Burner {fuel_label} Grill with Side Burner",
        ),
        sentences=(
            "{burners} stainless steel burners deliver {btu} BTUs across {area} of cooking space.",
            "Porcelain-coated cast-iron grates hold heat and are easy to clean.",
            "Electronic ignition lights every burner at the push of a button.",
        ),
        attrs={
            "burners": ("2", "3", "4", "5", "6"),
            "btu": ("30,000", "36,000", "48,000", "60,000"),
            "area": ("400 sq. in.", "500 sq. in.", "650 sq. in."),
            "finish": ("Stainless Steel", "Black"),
            "power_source": ("Gas",),
        },
        variants=(
            {"fuel": "Propane", "fuel_label": "Propane Gas"},
            {"fuel": "Natural Gas", "fuel_label": "Natural Gas"},
        ),
        scale={"2": 0.6, "5": 1.3, "6": 1.5},
    ),
    # --------------------------------------------------------------- Lighting
    _Leaf(
        "Lighting > Ceiling Lights > Pendants", (129, 0.45, 29, 599),
        titles=(
            "{brand} {lights}-Light {finish} {style} Pendant with {shade} Shade",
            "{brand} {style} {lights}-Light {finish} Kitchen Island Pendant",
        ),
        sentences=(
            "A {style_lower} pendant in {finish_lower} that hangs over kitchen islands and dining tables.",
            "Adjustable cord length up to 72 in.",
            "Dimmable with a compatible dimmer switch; bulbs sold separately.",
        ),
        attrs={
            "lights": ("1", "1", "3", "5"),
            "shade": ("Clear Glass", "Seeded Glass", "Metal", "Fabric"),
        },
        variants=(
            {"finish": "Matte Black", "finish_lower": "matte black", "color": "Black"},
            {"finish": "Brushed Nickel", "finish_lower": "brushed nickel", "color": "Silver"},
            {"finish": "Brushed Gold", "finish_lower": "brushed gold", "color": "Gold"},
            {"style": "Farmhouse", "style_lower": "farmhouse"},
            {"style": "Modern", "style_lower": "modern"},
            {"style": "Industrial", "style_lower": "industrial"},
        ),
        scale={"3": 1.8, "5": 2.6},
    ),
    _Leaf(
        "Lighting > Ceiling Lights > Flush Mount Lights", (59, 0.4, 19, 249),
        titles=(
            "{brand} {size} {finish} Integrated LED Flush Mount Ceiling Light",
            "{brand} {size} {lights}-Light {finish} Flush Mount",
        ),
        sentences=(
            "A low-profile {size} fixture for hallways, bedrooms and closets.",
            "Selectable color temperature: 2700K, 3000K or 4000K.",
            "Installs in minutes on a standard junction box.",
        ),
        attrs={"size": ("11 in.", "13 in.", "15 in."), "lights": ("2", "3"), "finish": _FIXTURE_FINISHES},
    ),
    _Leaf(
        "Lighting > Light Bulbs > LED Bulbs", (9, 0.3, 3, 49),
        titles=(
            "{brand} {equivalent} Equivalent {shape} Dimmable LED Light Bulb {color_temp} ({pack})",
            "{brand} {equivalent} Equivalent {shape} LED Bulb in {color_temp} ({pack})",
        ),
        sentences=(
            "Uses {watts} to give the light of a {equivalent} incandescent bulb.",
            "Rated for 15,000 hours, more than 13 years at 3 hours a day.",
            "Works with most standard dimmers.",
        ),
        attrs={
            "shape": ("A19", "BR30", "A21", "PAR38"),
            "color_temp": ("Soft White 2700K", "Bright White 3000K", "Daylight 5000K"),
            "pack": ("4-Pack", "6-Pack", "12-Pack", "16-Pack"),
        },
        variants=(
            {"equivalent": "60-Watt", "watts": "8.8 watts"},
            {"equivalent": "75-Watt", "watts": "11 watts"},
            {"equivalent": "100-Watt", "watts": "13 watts"},
        ),
        scale={"6-Pack": 1.4, "12-Pack": 2.4, "16-Pack": 3.0},
    ),
    _Leaf(
        "Lighting > Outdoor Lighting > Wall Lanterns", (49, 0.45, 19, 229),
        titles=(
            "{brand} {finish} Outdoor Wall Lantern Sconce with {glass} Glass",
            "{brand} {lights}-Light {finish} Dusk to Dawn Outdoor Wall Light",
        ),
        sentences=(
            "A weather-resistant wall lantern rated for wet locations.",
            "The built-in photocell turns the light on at dusk and off at dawn.",
            "Pair two beside a front door or garage.",
        ),
        attrs={
            "finish": ("Matte Black", "Oil-Rubbed Bronze", "Textured Black", "Galvanized"),
            "glass": ("Clear", "Seeded", "Frosted"),
            "lights": ("1", "2"),
            "material": ("Aluminum", "Stainless Steel"),
        },
    ),
    # --------------------------------------------------------------- Plumbing
    _Leaf(
        "Plumbing > Faucets > Kitchen Faucets", (179, 0.4, 59, 599),
        titles=(
            "{brand} {style} Single-Handle Pull-Down Sprayer Kitchen Faucet in {finish}",
            "{brand} {style} Touchless Pull-Down Kitchen Faucet in {finish}",
        ),
        sentences=(
            "A pull-down kitchen faucet with a 3-function spray head and magnetic docking.",
            "The {finish_lower} finish resists spots and fingerprints.",
            "Installs in 1 or 3 holes; deck plate included.",
        ),
        attrs={"style": ("Modern", "Transitional", "Farmhouse", "Commercial-Style")},
        variants=(
            {"finish": "Matte Black", "finish_lower": "matte black", "material": "Stainless Steel"},
            {"finish": "Brushed Nickel", "finish_lower": "brushed nickel", "material": "Brass"},
            {"finish": "Chrome", "finish_lower": "chrome", "material": "Brass"},
            {"finish": "Stainless Steel", "finish_lower": "stainless steel", "material": "Stainless Steel"},
        ),
    ),
    _Leaf(
        "Plumbing > Faucets > Bathroom Faucets", (89, 0.4, 29, 349),
        titles=(
            "{brand} {spread} {handles} Bathroom Faucet in {finish}",
            "{brand} {style} {spread} {handles} Bathroom Faucet with Drain in {finish}",
        ),
        sentences=(
            "This {spread_lower} bathroom faucet uses ceramic disc valves for drip-free use.",
            "WaterSense certified: uses 1.2 gallons per minute.",
            "Pop-up drain assembly included.",
        ),
        attrs={
            "handles": ("Single-Handle", "2-Handle"),
            "style": ("Modern", "Traditional", "Transitional"),
            "finish": _FIXTURE_FINISHES,
            "material": ("Brass", "Zinc"),
        },
        variants=(
            {"spread": "4 in. Centerset", "spread_lower": "4 in. centerset"},
            {"spread": "8 in. Widespread", "spread_lower": "8 in. widespread"},
            {"spread": "Single Hole", "spread_lower": "single-hole"},
        ),
    ),
    _Leaf(
        "Plumbing > Water Heaters > Tank Water Heaters", (749, 0.3, 399, 1999),
        titles=(
            "{brand} {capacity} {fuel} Tank Water Heater with {warranty} Warranty",
            "{brand} {capacity} Tall {fuel} Water Heater",
        ),
        sentences=(
            "This {capacity} {fuel_lower} water heater suits households of 3 to 5 people.",
            "A self-cleaning dip tube reduces sediment build-up.",
            "Backed by a {warranty} tank warranty.",
        ),
        attrs={
            "capacity": ("40 gal.", "50 gal.", "50 gal.", "75 gal."),
            "warranty": ("6-Year", "9-Year", "12-Year"),
        },
        variants=(
            {"fuel": "Electric", "fuel_lower": "electric", "power_source": "Electric"},
            {"fuel": "Natural Gas", "fuel_lower": "natural gas", "power_source": "Gas"},
            {"fuel": "Liquid Propane", "fuel_lower": "propane", "power_source": "Gas"},
        ),
        scale={"75 gal.": 1.5, "12-Year": 1.2},
    ),
    _Leaf(
        "Plumbing > Toilets > Two-Piece Toilets", (229, 0.35, 99, 699),
        titles=(
            "{brand} 2-Piece {gpf} GPF Single Flush {bowl} Toilet in {color}",
            "{brand} 2-Piece {gpf} GPF {bowl} Comfort Height Toilet in {color}, Seat Included",
        ),
        sentences=(
            "This two-piece {bowl_lower} toilet flushes with {gpf} gallons.",
            "Comfort height seating is 2 in. taller than standard toilets.",
            "A glazed trapway helps prevent clogs.",
        ),
        attrs={"gpf": ("1.1", "1.28", "1.6"), "color": ("White", "White", "Biscuit"), "material": ("Vitreous China",)},
        variants=(
            {"bowl": "Elongated", "bowl_lower": "elongated"},
            {"bowl": "Round", "bowl_lower": "round"},
        ),
    ),
    # ------------------------------------------------------------------ Paint
    _Leaf(
        "Paint > Interior Paint > Wall Paint", (42, 0.2, 12, 249),
        titles=(
            "{brand} {size} {color} {finish} Interior Paint and Primer",
            "{brand} Ultra {size} {color} {finish} Interior Paint",
        ),
        sentences=(
            "One-coat interior paint and primer in {color}, {finish_lower} finish.",
            "Low-VOC and low odor, ready for bedrooms and nurseries.",
            "Scrubbable and stain-resistant once cured.",
        ),
        attrs={"color": _PAINT_COLORS, "size": ("1 qt.", "1 gal.", "1 gal.", "5 gal.")},
        variants=(
            {"finish": "Eggshell", "finish_lower": "eggshell"},
            {"finish": "Satin", "finish_lower": "satin"},
            {"finish": "Flat", "finish_lower": "flat"},
            {"finish": "Semi-Gloss", "finish_lower": "semi-gloss"},
        ),
        scale={"1 qt.": 0.45, "5 gal.": 4.3},
    ),
    _Leaf(
        "Paint > Exterior Paint > House Paint", (52, 0.2, 14, 299),
        titles=(
            "{brand} {size} {color} {finish} Exterior Paint and Primer",
            "{brand} Weatherproof {size} {color} {finish} Exterior House Paint",
        ),
        sentences=(
            "Exterior paint and primer that resists cracking, peeling and fading.",
            "The mildew-resistant {finish_lower} finish suits siding, trim and fences.",
            "Apply when temperatures are as low as 35 F.",
        ),
        attrs={"color": _PAINT_COLORS, "size": ("1 gal.", "1 gal.", "5 gal.")},
        variants=(
            {"finish": "Flat", "finish_lower": "flat"},
            {"finish": "Satin", "finish_lower": "satin"},
            {"finish": "Semi-Gloss", "finish_lower": "semi-gloss"},
        ),
        scale={"5 gal.": 4.3},
    ),
    _Leaf(
        "Paint > Paint Supplies > Paint Brushes", (10, 0.35, 3, 39),
        titles=(
            "{brand} {size} {bristle} {brush_type} Paint Brush",
            "{brand} {size} {brush_type} Brush ({pack})",
        ),
        sentences=(
            "A {size} {brush_type_lower} brush with {bristle_lower} bristles for smooth, straight lines.",
            "Works with all latex and oil-based paints and stains.",
            "The soft-grip handle stays comfortable on long jobs.",
        ),
        attrs={"size": ("1-1/2 in.", "2 in.", "2-1/2 in.", "3 in."), "pack": ("1-Pack", "3-Pack", "5-Pack")},
        variants=(
            {"bristle": "Polyester", "bristle_lower": "polyester", "brush_type": "Angled Sash", "brush_type_lower": "angled sash"},
            {"bristle": "Nylon/Polyester", "bristle_lower": "nylon/polyester", "brush_type": "Flat", "brush_type_lower": "flat"},
            {"bristle": "Natural China", "bristle_lower": "natural china", "brush_type": "Angled Sash", "brush_type_lower": "angled sash"},
        ),
        scale={"3-Pack": 2.0, "5-Pack": 2.8},
    ),
    _Leaf(
        "Paint > Paint Supplies > Paint Rollers", (9, 0.35, 3, 39),
        titles=(
            "{brand} {width} x {nap} {roller_type} Roller Cover ({pack})",
            "{brand} {width} Paint Roller Kit with {nap} Nap {roller_type} Cover and Tray",
        ),
        sentences=(
            "A {nap} nap roller for {surface} surfaces.",
            "Shed-resistant fabric leaves a smooth, lint-free finish.",
            "Fits standard 9 in. roller frames.",
        ),
        attrs={
            "width": ("4 in.", "9 in.", "9 in.", "18 in."),
            "pack": ("1-Pack", "3-Pack", "6-Pack"),
            "roller_type": ("Microfiber", "Woven", "Foam"),
        },
        variants=(
            {"nap": "1/4 in.", "surface": "smooth"},
            {"nap": "3/8 in.", "surface": "smooth to semi-smooth"},
            {"nap": "1/2 in.", "surface": "semi-rough"},
            {"nap": "3/4 in.", "surface": "rough"},
        ),
        scale={"3-Pack": 2.2, "6-Pack": 3.6},
    ),
    # --------------------------------------------------------------- Flooring
    _Leaf(
        "Flooring > Hardwood Flooring > Solid Hardwood", (109, 0.3, 49, 299),
        titles=(
            "{brand} {species} {color} {thickness} x {width} Solid Hardwood Flooring ({coverage})",
            "{brand} {color} {species} {thickness} Thick x {width} Wide Solid Hardwood Flooring",
        ),
        sentences=(
            "Solid {species_lower} hardwood with a {color_lower} stain and aluminum oxide finish.",
            "It can be sanded and refinished several times over its life.",
            "Each case covers {coverage}.",
        ),
        attrs={
            "thickness": ("3/4 in.", "5/16 in."),
            "width": ("2-1/4 in.", "3-1/4 in.", "5 in."),
            "coverage": ("20 sq. ft./case", "22 sq. ft./case", "24 sq. ft./case"),
            "material": ("Hardwood",),
        },
        variants=(
            {"species": "Red Oak", "species_lower": "red oak", "color": "Natural", "color_lower": "natural"},
            {"species": "White Oak", "species_lower": "white oak", "color": "Gunstock", "color_lower": "gunstock"},
            {"species": "Hickory", "species_lower": "hickory", "color": "Saddle", "color_lower": "saddle"},
            {"species": "Maple", "species_lower": "maple", "color": "Butterscotch", "color_lower": "butterscotch"},
        ),
    ),
    _Leaf(
        "Flooring > Vinyl Flooring > Luxury Vinyl Plank", (54, 0.35, 24, 149),
        titles=(
            "{brand} {color} {thickness} {wear} Waterproof Click Lock Luxury Vinyl Plank Flooring ({coverage})",
            "{brand} {color} Rigid Core Luxury Vinyl Plank Flooring, {wear} Wear Layer",
        ),
        sentences=(
            "100% waterproof rigid core planks for kitchens, baths and basements.",
            "The {wear} wear layer stands up to kids, pets and heavy traffic.",
            "Click-lock installation floats over most existing floors.",
        ),
        attrs={
            "color": ("Coastal Oak", "Ashen Gray", "Rustic Hickory", "Driftwood", "Walnut Brown"),
            "thickness": ("5 mm", "6.5 mm", "8 mm"),
            "wear": ("12 mil", "20 mil", "22 mil"),
            "coverage": ("18.7 sq. ft./case", "21.3 sq. ft./case", "23.6 sq. ft./case"),
            "material": ("Vinyl",),
        },
    ),
    _Leaf(
        "Flooring > Tile > Porcelain Tile", (39, 0.4, 12, 149),
        titles=(
            "{brand} {look} {color} {size} {finish} Porcelain Floor and Wall Tile ({coverage})",
            "{brand} {color} {size} {finish} Porcelain Tile",
        ),
        sentences=(
            "A {look_lower} porcelain tile for floors, walls and showers.",
            "Rated PEI 4 for heavy residential and light commercial traffic.",
            "Frost-resistant, so it also works on covered porches.",
        ),
        attrs={
            "color": ("Carrara White", "Charcoal", "Beige", "Light Gray"),
            "size": ("12 in. x 24 in.", "24 in. x 24 in.", "6 in. x 36 in."),
            "finish": ("Matte", "Polished"),
            "coverage": ("11.6 sq. ft./case", "15.5 sq. ft./case"),
            "material": ("Porcelain",),
        },
        variants=(
            {"look": "Marble Look", "look_lower": "marble-look"},
            {"look": "Wood Look", "look_lower": "wood-look"},
            {"look": "Concrete Look", "look_lower": "concrete-look"},
        ),
    ),
    _Leaf(
        "Flooring > Rugs > Area Rugs", (129, 0.35, 29, 699),
        titles=(
            "{brand} {style} {color} {size} Area Rug",
            "{brand} {color} {size} {style} Indoor/Outdoor Area Rug",
        ),
        sentences=(
            "A {style_lower} area rug with a low pile that fits under doors.",
            "Stain-resistant fibers clean up with a damp cloth.",
            "Use with a rug pad on hard floors.",
        ),
        attrs={
            "color": ("Ivory", "Gray", "Navy", "Multi", "Beige"),
            "size": ("5 ft. x 7 ft.", "8 ft. x 10 ft.", "2 ft. x 8 ft. Runner", "9 ft. x 12 ft."),
            "material": ("Polypropylene", "Wool", "Jute"),
        },
        variants=(
            {"style": "Moroccan Trellis", "style_lower": "Moroccan trellis"},
            {"style": "Vintage Medallion", "style_lower": "vintage medallion"},
            {"style": "Abstract", "style_lower": "modern abstract"},
        ),
        scale={"5 ft. x 7 ft.": 0.6, "2 ft. x 8 ft. Runner": 0.4, "9 ft. x 12 ft.": 1.7, "Wool": 2.0},
    ),
    # ------------------------------------------------------------- Electrical
    _Leaf(
        "Electrical > Wiring Devices > Outlets", (6, 0.3, 1, 79),
        titles=(
            "{brand} {amps} {outlet_type} Outlet, {color} ({pack})",
            "{brand} {amps} Tamper-Resistant {outlet_type} Receptacle in {color}",
        ),
        sentences=(
            "A {amps} tamper-resistant {outlet_type_lower} receptacle that meets current code.",
            "Back and side wiring for quick installation.",
            "Wall plate sold separately.",
        ),
        attrs={
            "amps": ("15 Amp", "20 Amp"),
            "color": ("White", "Light Almond", "Black"),
            "pack": ("1-Pack", "2-Pack", "10-Pack"),
        },
        variants=(
            {"outlet_type": "GFCI", "outlet_type_lower": "GFCI"},
            {"outlet_type": "Duplex", "outlet_type_lower": "duplex"},
            {"outlet_type": "USB Type-A/Type-C", "outlet_type_lower": "USB charging"},
            {"outlet_type": "Decorator", "outlet_type_lower": "decorator"},
        ),
        scale={"GFCI": 3.5, "USB Type-A/Type-C": 4.0, "2-Pack": 1.8, "10-Pack": 6.0},
    ),
    _Leaf(
        "Electrical > Wiring Devices > Light Switches", (5, 0.3, 1, 79),
        titles=(
            "{brand} {switch_type} Light Switch, {color} ({pack})",
            "{brand} {amps} {switch_type} Switch in {color}",
        ),
        sentences=(
            "A {switch_type_lower} switch rated {amps} at 120V.",
            "Fits standard decorator wall plates.",
            "A neutral wire may be required; check the wiring diagram.",
        ),
        attrs={
            "amps": ("15 Amp", "20 Amp"),
            "color": ("White", "Light Almond", "Black", "Gray"),
            "pack": ("1-Pack", "3-Pack", "10-Pack"),
            "voltage": ("120V",),
        },
        variants=(
            {"switch_type": "Single-Pole Rocker", "switch_type_lower": "single-pole rocker"},
            {"switch_type": "3-Way Toggle", "switch_type_lower": "3-way toggle"},
            {"switch_type": "Smart Wi-Fi Dimmer", "switch_type_lower": "smart Wi-Fi dimmer"},
            {"switch_type": "Motion Sensor", "switch_type_lower": "motion sensor"},
        ),
        scale={"Smart Wi-Fi Dimmer": 6.0, "Motion Sensor": 4.0, "3-Pack": 2.5, "10-Pack": 6.0},
    ),
    _Leaf(
        "Electrical > Wire > Electrical Wire", (89, 0.25, 12, 499),
        titles=(
            "{brand} {length} {gauge} Solid Copper {wire_type} Wire",
            "{brand} {gauge} {wire_type} Electrical Wire, {length} Coil",
        ),
        sentences=(
            "{gauge} {wire_type} cable for residential branch circuits.",
            "Solid copper conductors with a PVC jacket rated to 90 C.",
            "Check local codes before installation.",
        ),
        attrs={"length": ("25 ft.", "50 ft.", "100 ft.", "250 ft."), "material": ("Copper",)},
        variants=(
            {"gauge": "14/2", "wire_type": "NM-B", "color": "White"},
            {"gauge": "12/2", "wire_type": "NM-B", "color": "Yellow"},
            {"gauge": "10/3", "wire_type": "NM-B", "color": "Orange"},
            {"gauge": "12 AWG", "wire_type": "THHN", "color": "Black"},
        ),
        scale={"25 ft.": 0.3, "50 ft.": 0.55, "250 ft.": 2.2, "10/3": 2.2, "12 AWG": 0.5},
    ),
    _Leaf(
        "Electrical > Extension Cords > Outdoor Extension Cords", (29, 0.3, 9, 119),
        titles=(
            "{brand} {length} {gauge} Outdoor Extension Cord, {color}",
            "{brand} {length} {gauge} Heavy Duty Outdoor Extension Cord with Lighted End",
        ),
        sentences=(
            "This {length} {gauge} extension cord is rated for outdoor use.",
            "The lighted end shows when power is on.",
            "Stays flexible down to -40 F for winter use.",
        ),
        attrs={
            "length": ("25 ft.", "50 ft.", "100 ft."),
            "gauge": ("16/3", "14/3", "12/3"),
            "color": ("Orange", "Green", "Yellow", "Blue"),
        },
        scale={"25 ft.": 0.6, "100 ft.": 1.8, "12/3": 1.5, "16/3": 0.7},
    ),
    # ------------------------------------------------------------- Appliances
    _Leaf(
        "Appliances > Refrigerators > French Door Refrigerators", (2199, 0.3, 1199, 4999),
        titles=(
            "{brand} {width} {capacity} French Door Refrigerator in {finish}",
            "{brand} {capacity} Counter Depth French Door Refrigerator with {feature} in {finish}",
        ),
        sentences=(
            "This {capacity} French door refrigerator has a bottom freezer drawer.",
            "It includes {feature_lower} and is ENERGY STAR certified.",
            "Adjustable glass shelves make room for tall items.",
        ),
        attrs={
            "width": ("33 in.", "36 in."),
            "capacity": ("22.1 cu. ft.", "25.5 cu. ft.", "27.8 cu. ft."),
            "finish": _APPLIANCE_FINISHES,
        },
        variants=(
            {"feature": "Ice Maker", "feature_lower": "an ice maker"},
            {"feature": "Dual Ice Maker", "feature_lower": "a dual ice maker"},
            {"feature": "Water Dispenser", "feature_lower": "an external water dispenser"},
        ),
    ),
    _Leaf(
        "Appliances > Washers & Dryers > Front Load Washers", (999, 0.25, 599, 1899),
        titles=(
            "{brand} {capacity} High-Efficiency Front Load Washer with {feature} in {color}",
            "{brand} {capacity} Smart Front Load Washer in {color}, ENERGY STAR",
        ),
        sentences=(
            "This {capacity} high-efficiency front load washer handles king-size comforters.",
            "The {feature} option removes tough stains without extra detergent.",
            "Stackable with the matching dryer.",
        ),
        attrs={
            "capacity": ("4.5 cu. ft.", "5.0 cu. ft.", "5.2 cu. ft."),
            "color": ("White", "Champagne", "Black Steel"),
            "feature": ("Steam", "Sanitize Cycle", "TurboWash"),
        },
    ),
    _Leaf(
        "Appliances > Dishwashers > Built-In Dishwashers", (749, 0.3, 399, 1699),
        titles=(
            "{brand} 24 in. Top Control Built-In Tall Tub Dishwasher in {finish}, {dba} dBA",
            "{brand} 24 in. Front Control Dishwasher with {feature} in {finish}",
        ),
        sentences=(
            "A quiet {dba} dBA dishwasher with a stainless steel tall tub.",
            "The {feature} adds loading flexibility for utensils and large pots.",
            "ENERGY STAR certified.",
        ),
        attrs={
            "dba": ("39", "42", "44", "47"),
            "finish": _APPLIANCE_FINISHES,
            "feature": ("3rd Rack", "Adjustable Upper Rack", "Cutlery Basket"),
        },
        scale={"39": 1.4, "47": 0.75},
    ),
    _Leaf(
        "Appliances > Microwaves > Over-the-Range Microwaves", (349, 0.3, 199, 899),
        titles=(
            "{brand} {capacity} Over-the-Range Microwave in {finish} with Sensor Cooking",
            "{brand} 30 in. {capacity} {watts} Over-the-Range Microwave in {finish}",
        ),
        sentences=(
            "This {capacity} over-the-range microwave has a {cfm} CFM vent fan.",
            "Sensor cooking adjusts time and power automatically.",
            "Fits a standard 30 in. opening above the range.",
        ),
        attrs={
            "capacity": ("1.7 cu. ft.", "1.9 cu. ft.", "2.1 cu. ft."),
            "finish": _APPLIANCE_FINISHES,
            "watts": ("1000-Watt", "1100-Watt"),
            "cfm": ("300", "400"),
        },
    ),
    # --------------------------------------------------------------- Hardware
    _Leaf(
        "Hardware > Door Hardware > Door Knobs", (27, 0.4, 9, 119),
        titles=(
            "{brand} {style} {finish} {function} Door Knob",
            "{brand} {finish} {function} Door Lever in {style} Style",
        ),
        sentences=(
            "A {function_lower} door knob for {use}.",
            "The adjustable latch fits 2-3/8 in. and 2-3/4 in. backsets.",
            "Installs with only a screwdriver.",
        ),
        attrs={
            "style": ("Round", "Ball", "Tulip", "Square"),
            "finish": ("Satin Nickel", "Matte Black", "Venetian Bronze", "Polished Brass"),
        },
        variants=(
            {"function": "Privacy", "function_lower": "privacy", "use": "bedrooms and bathrooms"},
            {"function": "Passage", "function_lower": "passage", "use": "hallways and closets"},
            {"function": "Keyed Entry", "function_lower": "keyed entry", "use": "exterior doors"},
        ),
        scale={"Keyed Entry": 1.5},
    ),
    _Leaf(
        "Hardware > Fasteners > Wood Screws", (9, 0.3, 3, 79),
        titles=(
            "{brand} #{gauge} x {length} {head} Head {finish} Wood Screws ({count})",
            "{brand} {count} #{gauge} x {length} {head} Head Wood Screws",
        ),
        sentences=(
            "{finish} wood screws with a {head_lower} head and star drive.",
            "The Type-17 point starts without a pilot hole.",
            "For decks, framing and general woodworking.",
        ),
        attrs={
            "gauge": ("6", "8", "9", "10"),
            "length": ("1 in.", "1-1/4 in.", "1-5/8 in.", "2-1/2 in.", "3 in."),
            "finish": ("Zinc-Plated", "Coated Exterior", "Stainless Steel"),
            "count": ("100-Pack", "1 lb. Box", "5 lb. Box"),
            "material": ("Steel",),
        },
        variants=(
            {"head": "Flat", "head_lower": "flat"},
            {"head": "Bugle", "head_lower": "bugle"},
            {"head": "Pan", "head_lower": "pan"},
        ),
        scale={"5 lb. Box": 3.5, "Stainless Steel": 2.0},
    ),
)
# fmt: on

#: Template fields that are wording, not product attributes: lower-case forms and labels.
_TEMPLATE_ONLY_SUFFIXES = ("_lower", "_label")

_VARIANT_GROUPS = {leaf.path: _variant_groups(leaf) for leaf in _LEAVES}

#: Every leaf category of the sample catalog, in tree order.
LEAF_CATEGORIES: tuple[str, ...] = tuple(leaf.path for leaf in _LEAVES)

#: Shopper queries that match products of the generated catalog (for the demo).
SAMPLE_QUERIES: tuple[str, ...] = (
    "20v cordless drill kit",
    "brushless impact driver",
    "matte black kitchen faucet pull down",
    "60 watt equivalent led bulbs daylight",
    "farmhouse pendant light for kitchen island",
    "eggshell interior paint agreeable gray",
    "waterproof luxury vinyl plank flooring",
    "gfci outlet 20 amp",
    "self propelled gas lawn mower",
    "french door refrigerator stainless steel with ice maker",
    "100 ft outdoor extension cord",
    "4 burner propane grill",
)


def generate_products(n: int, seed: int = 0) -> list[Product]:
    """Generate ``n`` synthetic products, deterministic for ``(n, seed)``.

    Args:
        n: Number of products (ids ``SKU-000001`` ...).
        seed: Random seed.

    Returns:
        The products, in id order.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    return [_product(rng, i + 1) for i in range(n)]


def write_sample_catalog(path: str | os.PathLike[str], n: int = 2000, seed: int = 0) -> Path:
    """Write a synthetic catalog; the format follows the extension (see ``detect_format``).

    CSV/TSV write ``attributes`` as a JSON string, JSONL as a JSON object and Parquet as a
    JSON string column.

    Args:
        path: Output file (``.csv``, ``.tsv``, ``.jsonl``, ``.ndjson``, ``.json``,
            ``.parquet``, ``.pq``); parent directories are created.
        n: Number of products.
        seed: Random seed.

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = detect_format(path)
    products = generate_products(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for p in products:
                record = {
                    "product_id": p.product_id,
                    "title": p.title,
                    "description": p.description,
                    "brand": p.brand,
                    "category": p.category,
                    "price": p.price,
                    "in_stock": p.in_stock,
                    "attributes": p.attributes,
                }
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path
    frame = pl.DataFrame(
        {
            "product_id": [p.product_id for p in products],
            "title": [p.title for p in products],
            "description": [p.description for p in products],
            "brand": [p.brand for p in products],
            "category": [p.category for p in products],
            "price": [p.price for p in products],
            "in_stock": [p.in_stock for p in products],
            "attributes": [json.dumps(p.attributes, ensure_ascii=False) for p in products],
        },
        schema={
            "product_id": pl.String,
            "title": pl.String,
            "description": pl.String,
            "brand": pl.String,
            "category": pl.String,
            "price": pl.Float64,
            "in_stock": pl.Boolean,
            "attributes": pl.String,
        },
    )
    if fmt == "parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path, separator="\t" if path.suffix.lower() == ".tsv" else ",")
    return path


def _product(rng: random.Random, number: int) -> Product:
    leaf = _LEAVES[rng.randrange(len(_LEAVES))]
    brand = rng.choice(_BRANDS[leaf.department])
    values: dict[str, Any] = {}
    for group in _VARIANT_GROUPS[leaf.path]:
        values.update(rng.choice(group))
    for name, choices in leaf.attrs.items():
        values.setdefault(name, rng.choice(choices))
    fields = _Defaults(values, brand=brand)
    title = rng.choice(leaf.titles).format_map(fields)
    count = 1 + min(2, int(rng.random() * 3))
    chosen = [leaf.sentences[0], *rng.sample(leaf.sentences[1:], count - 1)]
    description = " ".join(s.format_map(fields) for s in chosen)
    attributes = {k: v for k, v in values.items() if not k.endswith(_TEMPLATE_ONLY_SUFFIXES)}
    factor = math.prod(leaf.scale.get(v, 1.0) for v in set(values.values()))
    return Product(
        product_id=f"SKU-{number:06d}",
        title=" ".join(title.split()),
        description=" ".join(description.split()),
        brand=brand,
        category=leaf.path,
        price=_price(rng, leaf.price, factor),
        in_stock=rng.random() < 0.85,
        attributes=attributes,
    )


class _Defaults(dict):
    """Template fields; a field the leaf never sets renders as an empty string."""

    def __init__(self, values: dict[str, Any], brand: str) -> None:
        super().__init__(values, brand=brand)

    def __missing__(self, key: str) -> str:
        return ""


def _price(rng: random.Random, params: tuple[float, float, float, float], factor: float) -> float:
    """Log-normal price around ``median * factor``, clipped to [low, high], ending .97/.99."""
    median, sigma, low, high = params
    raw = median * factor * math.exp(rng.gauss(0.0, sigma))
    dollars = int(min(max(raw, low), high))
    return round(dollars + rng.choice((0.97, 0.99)), 2)
