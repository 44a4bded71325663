"""Word banks for the synthetic corpus, grouped by meaning so that templates stay sensible.

A tokenizer trained on the synthetic corpus can only learn as many merges as the corpus has
distinct words to build, so these lists are what lets the demo reach its 4096-token vocabulary
(the invented world alone has ~500 distinct words), and they give the tiny model everyday
English to imitate. Each list is plain words; templates in synthetic.py decide where they go.
"""

from __future__ import annotations


def _w(text: str) -> list[str]:
    return text.split()


def _phrases(text: str) -> list[str]:
    return [p.strip() for p in text.split(";") if p.strip()]


FOODS = _w("""bread soup rice pasta pie cake cheese beans carrots potatoes tomatoes onions peas corn lettuce
cucumbers pumpkins strawberries blueberries cherries grapes bananas lemons peaches plums melons pancakes waffles
noodles dumplings muffins biscuits porridge yogurt butter jam honey eggs sausages omelettes salad sandwiches pizza
cookies chocolate popcorn walnuts almonds raisins mushrooms spinach broccoli cabbage garlic oranges apricots figs
coconuts pineapples mangoes kiwis radishes turnips beetroots celery leeks olives pretzels crackers toast cereal
oatmeal stew curry tacos burritos lasagna risotto crumble custard pudding doughnuts scones bagels croissants""")
MEALS = _w("breakfast lunch dinner supper")
DRINKS = _w("tea milk juice lemonade cocoa water coffee")
TOPICS = _w("""stars dinosaurs volcanoes oceans pirates dragons robots castles jungles deserts mountains rivers trains
planets insects butterflies whales penguins elephants giraffes tigers bears wolves foxes owls sharks dolphins
octopuses rockets islands caves glaciers rainbows thunderstorms clouds magnets bridges lighthouses windmills
knights wizards giants explorers inventors kings queens princesses sailors astronauts farmers gardens forests
seasons oceans comets tornadoes earthquakes fossils crystals rivers deserts meadows swamps canyons""")
INSTRUMENTS = _w("piano guitar violin flute trumpet drums harp cello clarinet accordion harmonica banjo trombone "
                 "xylophone tambourine saxophone ukulele")
CLOTHING = _w("scarf sweater hat coat gloves socks boots jacket dress shirt raincoat cap mittens vest "
              "cardigan tie belt")
PLANTS = _w("roses tulips daisies sunflowers lilies violets poppies carrots beans tomatoes peas herbs onions "
            "strawberries pumpkins potatoes lavender marigolds pansies")
STRUCTURES = _w("treehouse sandcastle snowman birdhouse fort bridge tower raft kennel fence shelf bench "
                "kite boat wagon")
COLLECTIBLES = _w("shells stamps leaves pebbles feathers acorns pinecones buttons coins marbles postcards "
                  "stickers seeds")
EMOTIONS = _w("happy sad excited nervous proud tired surprised curious grateful worried calm cheerful "
              "lonely hopeful brave bored amazed glad")
WEATHER = _w("sunny rainy windy snowy foggy cloudy stormy warm cold chilly hot frosty misty bright")
ADJ_THINGS = _w("""shiny old new broken heavy light tiny huge round square smooth rough soft hard wooden
golden silver striped spotted dusty muddy clean bright dark colourful strange lovely useful tall short wide
narrow warm cold sticky fluffy wobbly squeaky sparkly rusty""")
ADJ_PEOPLE = _w("""kind clever brave gentle busy quiet cheerful patient careful curious friendly funny honest
polite shy helpful calm generous thoughtful lively sleepy hungry""")
TIMES = _phrases("in the morning; at noon; in the afternoon; in the evening; before breakfast; after lunch; "
                 "after school; at sunset; on Saturday; on Sunday; on Monday; last week; yesterday; "
                 "early on Friday; late on Tuesday; on Wednesday; on Thursday")
ACTIVITIES = _phrases("""played football in the park; flew a kite on the hill; read a book about {topic};
painted a picture of {topic}; planted {plant} in the garden; built a {structure}; sang a song about {topic};
rode a bicycle along the river; swam in the lake; climbed a tall tree; baked {food} for the family;
wrote a letter to {friend}; fed the ducks at the pond; cleaned the kitchen; fixed a broken {structure};
collected {collectible} on the beach; watched the stars from the roof; danced to music in the hall;
knitted a warm {clothing}; practised the {instrument}; visited the museum to learn about {topic};
drew a map of the town; went fishing with {friend}; helped a neighbour carry boxes;
made a cake with {friend}; washed the dishes; tidied the bedroom; walked the dog around the block;
picked {food} at the farm; listened to a story about {topic}; built a model of a {structure};
played chess with {friend}; sewed a button on a {clothing}; took photos of {topic};
went to the library and borrowed a book about {topic}; made lemonade and sold it at the corner;
played hide and seek with {friend}; watered the {plant}; went sledging down the hill;
counted the clouds in the sky; learned a new song on the {instrument}; wrote a poem about {topic}""")
JOB_DUTIES = {
    "baker": "bakes bread and cakes early in the morning", "teacher": "helps children learn to read and count",
    "farmer": "grows food and looks after the animals", "doctor": "helps people who are sick or hurt",
    "painter": "paints pictures and walls", "fisher": "catches fish from a boat",
    "builder": "builds houses, walls and bridges", "singer": "sings songs for other people",
    "gardener": "plants flowers and cuts the grass", "driver": "drives a bus around the town",
    "cook": "makes meals in a busy kitchen", "librarian": "looks after the books in the library",
    "nurse": "cares for patients in the hospital", "pilot": "flies aeroplanes across the sky",
    "postman": "brings letters and parcels to every house", "tailor": "sews clothes that fit well",
    "carpenter": "makes tables and chairs out of wood", "vet": "takes care of sick animals",
    "firefighter": "puts out fires and keeps people safe", "shopkeeper": "sells food and tools in a shop",
    "musician": "plays music at parties and concerts", "scientist": "asks questions and does experiments",
}
PLACE_NOTES = {
    "the market": "people buy fruit, bread and flowers", "the park": "children play on the swings",
    "the library": "there are thousands of books", "the school": "children learn to read and write",
    "the river": "the water flows down to the sea", "the bakery": "it smells of warm bread",
    "the farm": "cows, pigs and sheep live", "the beach": "the waves roll onto the sand",
    "the forest": "tall trees grow close together", "the zoo": "you can see lions and giraffes",
    "the garden": "flowers and vegetables grow", "the station": "trains arrive and leave all day",
    "the museum": "old and wonderful things are kept", "the hill": "you can see the whole town",
}
WILD_ANIMALS = {  # animal -> (where it lives, what it eats, something true about it)
    "deer": ("the forest", "leaves and grass", "has long thin legs"),
    "squirrel": ("the trees", "nuts", "has a bushy tail"),
    "hedgehog": ("the hedges", "beetles and worms", "is covered in spines"),
    "badger": ("a sett", "worms", "digs at night"),
    "otter": ("the river", "fish", "floats on its back"),
    "beaver": ("a lodge", "bark", "builds dams"),
    "swan": ("the lake", "water plants", "has a long neck"),
    "goose": ("the marsh", "grass", "flies in a line"),
    "donkey": ("a paddock", "hay", "has long ears"),
    "camel": ("the desert", "dry plants", "can go days without water"),
    "zebra": ("the savanna", "grass", "has black and white stripes"),
    "giraffe": ("the savanna", "leaves", "is the tallest animal"),
    "elephant": ("the savanna", "grass and fruit", "has a long trunk"),
    "monkey": ("the jungle", "fruit", "swings from branch to branch"),
    "kangaroo": ("the bush", "grass", "carries its baby in a pouch"),
    "koala": ("the gum trees", "eucalyptus leaves", "sleeps most of the day"),
    "panda": ("the bamboo forest", "bamboo", "is black and white"),
    "penguin": ("the icy shore", "fish", "cannot fly but swims well"),
    "seal": ("the rocky coast", "fish", "barks and claps its flippers"),
    "whale": ("the ocean", "krill", "is bigger than a bus"),
    "dolphin": ("the sea", "fish", "is very playful"),
    "crab": ("the beach", "tiny sea creatures", "walks sideways"),
    "snail": ("the damp garden", "leaves", "carries its shell on its back"),
    "butterfly": ("the meadow", "nectar", "starts life as a caterpillar"),
    "ant": ("an anthill", "crumbs and seeds", "can carry heavy loads"),
    "spider": ("a web", "flies", "has eight legs"),
    "ladybird": ("the garden", "aphids", "has red wings with black spots"),
    "bat": ("a cave", "insects", "flies at night"),
    "eagle": ("the mountains", "fish and rabbits", "has very sharp eyes"),
    "robin": ("the garden", "worms", "has a red breast"),
    "tortoise": ("a warm field", "leaves", "moves very slowly"),
    "crocodile": ("the river bank", "fish", "has strong jaws"),
    "hippo": ("the river", "grass", "stays in the water when it is hot"),
    "wolf": ("the forest", "meat", "howls at night"),
    "fox": ("a den", "mice and berries", "has a bushy red tail"),
    "bear": ("the woods", "berries and fish", "sleeps through the winter"),
    "tiger": ("the jungle", "meat", "has orange fur with stripes"),
    "polar bear": ("the Arctic", "seals", "has thick white fur"),
}
ROOMS = _w("kitchen bedroom bathroom attic cellar hall garage porch study")
HOUSEHOLD = _w("""table chair sofa lamp clock mirror window door cupboard drawer blanket pillow curtain carpet
kettle teapot saucepan spoon fork plate bowl bucket broom ladder hammer rope basket candle vase rug shelf
wardrobe fridge oven sink towel toothbrush umbrella suitcase piano radio bookcase stool jug""")
CHORE_VERBS = _w("polished painted moved dusted opened closed repaired cleaned folded carried wrapped washed "
                 "mended tidied emptied filled")
SUBJECTS = {"maths": "how to add and multiply numbers", "reading": "new words and long stories",
            "history": "kings, queens and old castles", "geography": "maps, rivers and mountains",
            "science": "plants, magnets and the weather", "music": "songs and rhythms",
            "art": "drawing, painting and clay", "sport": "running, jumping and catching a ball",
            "writing": "letters, poems and neat handwriting", "cooking": "recipes and kitchen safety"}
TRANSPORT = _w("bus train bicycle car boat ferry tram scooter aeroplane horse wagon tractor")
SIGHTS = _phrases("""a field of sunflowers; a windmill turning slowly; a herd of cows; a castle on a hill;
a rainbow over the sea; a farmer driving a tractor; a lighthouse by the harbour; a waterfall in the valley;
a flock of sheep; children flying kites; an old stone bridge; a busy harbour full of boats; a forest of pine trees;
a lake as smooth as glass; a hot air balloon; a long goods train; an orchard full of apple trees""")
OPPOSITES = [tuple(p.split("/")) for p in _w("""hot/cold big/small tall/short fast/slow happy/sad old/young
new/old light/dark heavy/light open/closed full/empty wet/dry clean/dirty early/late hard/soft loud/quiet
rich/poor strong/weak thick/thin wide/narrow high/low near/far up/down in/out day/night left/right
first/last top/bottom inside/outside push/pull give/take buy/sell win/lose laugh/cry begin/end
asleep/awake sweet/sour smooth/rough sharp/blunt brave/afraid true/false right/wrong question/answer
start/finish above/below before/after always/never more/less many/few same/different easy/difficult
cheap/expensive safe/dangerous arrive/leave remember/forget friend/enemy summer/winter north/south
east/west over/under front/back alive/dead tidy/messy polite/rude calm/angry shallow/deep""")]
PAST_TENSE = [tuple(p.split("/")) for p in _w("""walk/walked jump/jumped play/played look/looked help/helped
open/opened climb/climbed paint/painted cook/cooked wash/washed laugh/laughed listen/listened watch/watched
visit/visited smile/smiled dance/danced plant/planted carry/carried try/tried cry/cried stop/stopped
go/went see/saw eat/ate run/ran swim/swam sing/sang drink/drank write/wrote read/read ride/rode
fly/flew draw/drew grow/grew know/knew throw/threw take/took give/gave find/found make/made buy/bought
bring/brought think/thought catch/caught teach/taught sleep/slept keep/kept feel/felt leave/left
meet/met sit/sat stand/stood build/built send/sent spend/spent lose/lost tell/told sell/sold
hold/held come/came become/became begin/began break/broke choose/chose speak/spoke wake/woke
wear/wore hide/hid bite/bit fall/fell forget/forgot get/got hear/heard say/said pay/paid""")]
IRREGULAR_PLURALS = [tuple(p.split("/")) for p in _w("""child/children mouse/mice goose/geese foot/feet
tooth/teeth man/men woman/women person/people sheep/sheep fish/fish leaf/leaves knife/knives wolf/wolves
loaf/loaves half/halves shelf/shelves ox/oxen cactus/cacti deer/deer""")]
EXTRA_NOUNS = _w("""apple orange banana pencil notebook ruler eraser backpack lunchbox bottle blanket pillow
mountain valley island forest desert ocean river lake stream meadow village city street corner bridge tunnel
harbour airport station market castle palace cottage cabin barn stable garden orchard vineyard
doctor teacher farmer pilot sailor soldier artist dancer writer student captain king queen prince princess
wizard giant dragon robot rocket planet comet star moon sun cloud rainbow thunder lightning storm breeze
morning evening midnight minute second season calendar birthday holiday festival picnic parade concert
letter parcel present ribbon balloon candle lantern compass telescope microscope magnet battery engine
wheel ladder hammer shovel bucket rope chain ticket wallet pocket button zipper needle thread""")
NATURE_NOUNS = _w("""volcano glacier canyon swamp marsh pebble boulder puddle icicle snowflake raindrop acorn
blossom petal thorn branch trunk root sprout moss fern ivy bamboo cactus coral seaweed pearl crystal diamond
emerald sapphire granite sand clay mud dust smoke steam flame spark shadow echo whisper melody rhythm chorus
poem riddle puzzle secret treasure journey adventure mystery discovery invention experiment kingdom empire
waterfall hillside riverbank seashore sunrise sunset horizon twilight dawn dusk meadowlark hedgerow
pathway footprint lighthouse harbour cliff dune lagoon reef iceberg avalanche blizzard drizzle hailstone""")
MORE_ADJ_THINGS = _w("""enormous gigantic little ancient modern mysterious magical ordinary peculiar wonderful
marvellous delicious fragrant noisy silent crowded cosy freezing boiling fragile delicate precious valuable
gloomy sturdy slippery prickly crunchy crispy juicy spicy salty bitter creamy frozen melted polished
painted twisted curly straight hollow solid sparkling glowing dim faded tattered brand-new""")
MORE_ADJ_PEOPLE = _w("""fearless graceful clumsy nimble grumpy jolly merry anxious eager humble loyal
mischievous obedient stubborn wise foolish cheeky sensible cautious adventurous imaginative energetic
forgetful hardworking talented modest""")
