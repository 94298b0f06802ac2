"""Rebuild ``common_passwords.txt``, the list the password policy refuses.

Run ``python -m cortex_core.adapters.security.common_passwords_build`` to print
the list; a unit test checks that the shipped file equals this output, so the
file's provenance is this module and nothing else.

Provenance (see ``docs/security.md``): the seeds below were written by hand from
general knowledge of the passwords that top every published leaked-password
frequency list (the "123456 / password / qwerty" family), common first names,
sports, pets, keyboard walks and the ways people decorate them (digits, years,
``!``, capitals, leetspeak). No breach corpus was copied, and the ranking is a
guess, not a measured frequency. Only entries of 8 or more characters are kept,
because the policy never allows anything shorter.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Iterator

MAX_ENTRIES = 10_000
MIN_LENGTH = 8

# Passwords that appear near the top of every public leaked-password list.
_TOP = """
123456 password 12345678 qwerty 123456789 12345 1234 111111 1234567 dragon 123123
baseball abc123 football monkey letmein 696969 shadow master 666666 qwertyuiop 123321
mustang 1234567890 michael 654321 superman 1qaz2wsx 7777777 121212 000000 qazwsx
123qwe killer trustno1 jordan jennifer zxcvbnm asdfgh hunter buster soccer harley
batman andrew tigger sunshine iloveyou 2000 charlie robert thomas hockey ranger daniel
starwars klaster 112233 george computer michelle jessica pepper 1111 zxcvbn 555555
11111111 131313 freedom 777777 pass maggie 159753 aaaaaa ginger princess joshua cheese
amanda summer love ashley nicole chelsea biteme matthew access yankees 987654321 dallas
austin thunder taylor matrix william corvette hello martin heather secret merlin
diamond 1234qwer gfhjkm hammer silver 222222 88888888 anthony justin test bailey
q1w2e3r4t5 patrick internet scooter orange 11111 golfer cookie richard samantha
bigdog guitar jackson whatever mickey chicken sparky snoopy maverick phoenix camaro
peanut morgan welcome falcon cowboy ferrari samsung andrea smokey steelers joseph
mercedes dakota arsenal eagles melissa boomer booboo spider nascar monster tigers
yellow xxxxxx 123123123 gateway marina diablo bulldog qwer1234 compaq purple hardcore
banana junior hannah 123654 porsche lakers iceman money cowboys 987654 london tennis
999999 ncc1701 coffee scooby 0000 miller boston q1w2e3r4 brandon yamaha chester
mother forever johnny edward 333333 oliver redsox player nikita knight fender barney
midnight please brandy chicago badboy slayer rangers charles angel flower bigdaddy
rabbit wizard jasper enter rachel chris steven winner adidas victoria natasha 1q2w3e4r
jasmine winter prince panties marine ghbdtn fishing cocacola casper james 232323
raiders 888888 marlboro gandalf asdfasdf crystal 87654321 12344321 golden 8675309
qwerty123 password1 password123 welcome1 admin admin123 administrator root toor
changeme default guest letmein1 passw0rd p@ssw0rd p@ssword Password1 Password123
iloveyou1 princess1 monkey123 football1 qwertyui 1q2w3e4r5t 1qaz2wsx3edc zaq12wsx
zaq1zaq1 qazwsxedc qweasdzxc asdfghjkl asdfghjk zxcvbnm1 abcd1234 abc12345 a1b2c3d4
aa123456 qwe123456 123456a 123456789a 1234567890a a123456789 password12 password1234
passwordpassword 11223344 12341234 11112222 00000000 12121212 69696969 1q2w3e4r5t6y
q1w2e3r4t5y6 1qazxsw2 qwertyuiop123 asdfghjkl123 iloveyou123 sunshine1 superman1
trustno11 starwars1 baseball1 basketball liverpool chelsea1 manchester barcelona
realmadrid juventus football123 soccer123 hockey123 myspace1 linkedin facebook
instagram twitter google youtube microsoft apple123 samsung123 nintendo pokemon
minecraft fortnite roblox playstation xbox360 computer1 internet1 letmein123
welcome123 welcome2020 changeme123 secret123 qwerty1234 qwerty12345 1234567891
12345678910 123456789123 987654321a 147258369 159357 147852369 963852741 741852963
789456123 123789456 456789123 1029384756 0987654321 qwertyuiopasdfghjklzxcvbnm
abcdefgh abcdefghi abcdefghij abcdefg1 aaaaaaaa aaaaaaaaaa zzzzzzzz asdfqwer
qwerasdf zxcvasdf 1qaz1qaz 2wsx3edc 3edc4rfv 4rfv5tgb 1qaz@wsx !qaz2wsx !qaz@wsx
1qaz!qaz qazxswedc mnbvcxz poiuytrewq lkjhgfdsa ytrewq 0okm9ijn 1234abcd iloveu
ihateyou loveyou lovely lovelove babygirl babyboy angel1 angels sweetheart
sweetie honey honey123 darling beautiful pretty cutie butterfly rainbow sunflower
flowers unicorn dolphin dolphins elephant tiger lion123 kitten kitty123 puppy
doggie dog123 cat123 blink182 metallica nirvana slipknot eminem tupac beatles
pink123 red123 blue123 green123 black123 white123 purple123 orange123 silver123
golden123 diamond1 crystal1 goodluck godisgood jesus jesus123 jesus1 christ
blessed blessing faith123 trinity heaven angel123 lucifer devil666 hell666
dragon123 dragons dragonball naruto sasuke goku pikachu spiderman batman123
ironman hulk superman123 wolverine starwars123 darthvader skywalker jedi
startrek enterprise gandalf1 frodo hobbit legolas hogwarts harrypotter
voldemort matrix1 neo123 zion trinity1 morpheus terminator predator alien
qwertyqwerty asdasdasd qweqweqwe zxczxczxc 123qweasd qweasd123 123qweasdzxc
1q2w3e 1q2w3e4r5 q1w2e3 qaz123 wsx123 edc123 zaq123 xsw21qaz 1qaz2wsx! pass1234
pass123 pass12345 pass@123 pass@word passpass password! password1! password123!
Password! Password1! Password12 Password12! Password2020 Password2021 Password2022
Password2023 Password2024 Password2025 letmein! welcome! qwerty! qwerty1! admin1234
administrator1 adminadmin root1234 rootroot toortoor user1234 useruser test1234
testtest tester123 demo1234 guest123 temp1234 temppass temporary changeit
"""

_WORDS = """
password welcome monkey dragon football baseball letmein master sunshine princess
shadow superman iloveyou trustno1 starwars computer michael jennifer jordan hunter
soccer hockey killer charlie freedom whatever qwerty secret summer winter spring
autumn flower cookie chocolate pepper cheese chicken banana orange purple yellow
silver golden diamond crystal thunder lightning tiger eagle falcon phoenix dolphin
rabbit turtle panther cowboy ranger knight wizard pirate ninja samurai gangster
angel devil heaven jesus christ blessed family friends forever lovely sweety
mustang ferrari porsche corvette camaro mercedes yamaha harley hondacivic toyota
liverpool arsenal chelsea barcelona madrid juventus yankees lakers cowboys steelers
patriots raiders packers eagles bulldogs tigers warriors spartans trojans wildcats
internet google facebook myspace youtube microsoft windows apple samsung nintendo
pokemon minecraft playstation matrix gandalf batman spiderman pikachu naruto
hello welcome admin changeme default access login qwertyuiop asdfghjkl zxcvbnm
"""

_NAMES = """
michael jennifer jessica ashley amanda joshua matthew daniel andrew robert thomas
william james david richard joseph charles christopher anthony mark donald steven
paul kevin brian george edward ronald timothy jason jeffrey ryan jacob gary nicholas
eric jonathan stephen larry justin scott brandon benjamin samuel gregory alexander
frank patrick raymond jack dennis jerry tyler aaron henry douglas peter adam nathan
zachary walter kyle harold carl arthur gerald roger keith jeremy lawrence sean
christian albert austin jesse ethan dylan bruce bryan jordan logan alan juan gabriel
mary patricia linda barbara elizabeth susan margaret sarah karen nancy lisa betty
helen sandra donna carol ruth sharon michelle laura kimberly deborah amy angela
melissa brenda emma olivia sophia isabella charlotte amelia harper evelyn abigail
emily madison chloe natalie hannah samantha victoria rachel lauren megan heather
nicole stephanie rebecca katherine christina kelly tiffany crystal danielle
alexandra alexis andrea anna diana maria monica natasha veronica vanessa caroline
"""

_SUFFIXES = (
    "",
    "1",
    "12",
    "123",
    "1234",
    "12345",
    "123456",
    "!",
    "1!",
    "123!",
    "01",
    "69",
    "007",
    "99",
    "11",
    "13",
    "22",
    "23",
    "@123",
    "#1",
    "321",
    "777",
    "666",
    "2000",
    "2020",
    "2021",
    "2022",
    "2023",
    "2024",
    "2025",
    "2026",
)

_LEET = str.maketrans({"a": "@", "o": "0", "e": "3", "i": "1", "s": "$"})

_KEYBOARD_ROWS = (
    "1234567890",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "!@#$%^&*()",
    "qazwsxedcrfvtgbyhnujmikolp",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
    "1q2w3e4r5t6y7u8i9o0p",
    "q1w2e3r4t5y6u7i8o9p0",
    "azertyuiop",
    "qwertzuiop",
)

_SEASONS_AND_MONTHS = """
spring summer autumn winter fall january february march april may june july august
september october november december
"""


def _split(block: str) -> list[str]:
    return block.split()


def _keyboard_walks() -> Iterator[str]:
    for row in _KEYBOARD_ROWS:
        for text in (row, row[::-1]):
            for length in range(6, len(text) + 1):
                yield text[:length]
                yield text[:length] + "1"
                yield text[:length] + "123"


def _repeats() -> Iterator[str]:
    for digit in "0123456789":
        for length in range(8, 13):
            yield digit * length
    for letter in "abcdefghijklmnopqrstuvwxyz":
        yield letter * 8
    for start in range(10):
        run = "".join(str((start + i) % 10) for i in range(12))
        for length in range(8, 13):
            yield run[:length]
    for pair in ("12", "21", "69", "11", "00", "01", "10", "ab", "xo"):
        yield pair * 4
        yield pair * 5


def _decorated(words: Iterable[str], suffixes: Iterable[str]) -> Iterator[str]:
    suffix_list = list(suffixes)
    for word in words:
        for suffix in suffix_list:
            yield word + suffix
            yield word.capitalize() + suffix
        yield word.translate(_LEET)
        yield word.translate(_LEET) + "1"
        yield word + word


def _names_with_years(names: Iterable[str]) -> Iterator[str]:
    years = [str(year) for year in range(1970, 2011)]
    for name, year in itertools.product(names, years):
        yield name + year
    for name, short_year in itertools.product(names, range(70, 100)):
        yield f"{name}{short_year}"


def _seasons_with_years() -> Iterator[str]:
    for word in _split(_SEASONS_AND_MONTHS):
        for year in range(2000, 2031):
            yield f"{word}{year}"
            yield f"{word}{year}!"
            yield f"{word}@{year}"


def build() -> list[str]:
    """Return the list: lower-case, unique, at least 8 characters, at most 10,000.

    Order is a rough guess of popularity: the hand-written top list first, then
    generated patterns.
    """
    sources: Iterable[str] = itertools.chain(
        _split(_TOP),
        _repeats(),
        _keyboard_walks(),
        _decorated(_split(_WORDS), _SUFFIXES),
        _seasons_with_years(),
        _decorated(_split(_NAMES), _SUFFIXES[:8]),
        _names_with_years(_split(_NAMES)),
    )
    seen: dict[str, None] = {}
    for entry in sources:
        key = entry.casefold()
        if len(key) >= MIN_LENGTH and key not in seen:
            seen[key] = None
            if len(seen) == MAX_ENTRIES:
                break
    return list(seen)


def render() -> str:
    """The file's exact text: a comment header, then one password per line."""
    header = (
        "# Common passwords refused by cortex_core's password policy.\n"
        "# Generated by cortex_core.adapters.security.common_passwords_build; do not edit.\n"
    )
    return header + "".join(f"{entry}\n" for entry in build())


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
