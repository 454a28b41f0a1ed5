// Seeds the demo shop into a real MongoDB for `docker compose up` (docker-compose.yml, service
// `seed`), then keeps changing it for a minute, so Tributary has a copy to make and a stream to
// follow. Shapes follow mongo-sim's `--seed-demo` dataset and mappings/demo/: customers with a
// nested address (string or ObjectId `_id`), products keyed by SKU with Decimal128 prices, and
// orders with a customer sub-document, Decimal128 totals (the sum of qty x price), dates, tags,
// line items (child table order_items) and fields no mapping names (channel, notes -> `extra`).
//
//   mongosh --quiet 'mongodb://mongo:27017/shop?replicaSet=rs0' docker/seed.js
//
// SEED_ORDERS (default 5000) sets the size: about a tenth as many customers, 200 products.
// Deterministic apart from ObjectIds: one seed, the same values every time. Runs once: when shop.customers
// already holds documents it says so and exits 0.

const ORDERS = parseInt(process.env.SEED_ORDERS || "5000", 10);
const CHANGE_SECONDS = parseInt(process.env.SEED_CHANGE_SECONDS || "60", 10);
const BATCH = 500;

// mulberry32: a small seeded generator, so every run writes the same shop.
let state = 20261203;
function random() {
  state = (state + 0x6d2b79f5) | 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1)); // inclusive
const pick = (items) => items[int(0, items.length - 1)];
const money = (cents) => NumberDecimal((cents / 100).toFixed(2));
const EPOCH = Date.UTC(2024, 0, 1);
const SPAN = 2 * 365 * 24 * 3600 * 1000;
const date = () => new Date(EPOCH + Math.floor(random() * SPAN));

const FIRST = ["Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger"];
const LAST = ["Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie", "Allen", "Dijkstra"];
const CITIES = [["Berlin", "10", "DE"], ["Paris", "75", "FR"], ["Madrid", "28", "ES"], ["Lisbon", "11", "PT"],
                ["Amsterdam", "10", "NL"], ["Vienna", "10", "AT"], ["Dublin", "D0", "IE"], ["Boston", "02", "US"]];
const STREETS = ["Main Street", "Station Road", "Harbour Lane", "Mill Road", "Park Avenue", "Market Square"];
const ADJECTIVES = ["Classic", "Compact", "Deluxe", "Eco", "Portable", "Smart", "Vintage", "Wireless"];
const NOUNS = ["Kettle", "Lamp", "Backpack", "Keyboard", "Notebook", "Headphones", "Mug", "Chair"];
const PRODUCT_TAGS = ["new", "sale", "bestseller", "eco", "gift", "limited"];
const STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled", "refunded"];
const ORDER_TAGS = ["gift", "express", "first-order", "vip", "promo", "fragile"];
const CHANNELS = ["web", "mobile", "store", "phone"];
const NOTES = ["Leave at the door", "Call before delivery", "Gift wrap, please", "Ring twice"];

function someOf(items, max) {
  const out = [];
  for (let i = int(0, max); i > 0; i--) {
    const t = pick(items);
    if (!out.includes(t)) out.push(t);
  }
  return out;
}

const shop = db.getSiblingDB("shop");
if (shop.customers.estimatedDocumentCount() > 0) {
  print("seed: shop.customers already holds documents; nothing to do.");
  quit(0);
}

// Inserts in batches with a pause between them, so the rows are seen arriving in Postgres.
function insertAll(coll, docs) {
  for (let i = 0; i < docs.length; i += BATCH) {
    coll.insertMany(docs.slice(i, i + BATCH), { ordered: false });
    sleep(200);
  }
  print(`seed: ${docs.length} documents in shop.${coll.getName()}`);
}

const customers = [];
for (let i = 0; i < Math.max(1, Math.floor(ORDERS / 10)); i++) {
  const [city, zip, country] = pick(CITIES);
  const first = pick(FIRST), last = pick(LAST);
  customers.push({
    // Every seventh customer has an ObjectId `_id`, the rest a string one, as in mongo-sim.
    _id: i % 7 === 3 ? new ObjectId() : `cust-${String(i + 1).padStart(6, "0")}`,
    name: `${first} ${last}`,
    email: `${first.toLowerCase()}.${last.toLowerCase()}${i + 1}@example.com`,
    address: { street: `${int(1, 199)} ${pick(STREETS)}`, city, zip: `${zip}${String(int(0, 999)).padStart(3, "0")}`, country },
    createdAt: date(),
  });
}
insertAll(shop.customers, customers);

const products = [];
for (let i = 0; i < 200; i++) {
  products.push({
    _id: `SKU-${String(i + 1).padStart(5, "0")}`,
    name: `${pick(ADJECTIVES)} ${pick(NOUNS)}`,
    cents: int(199, 24999),
    tags: someOf(PRODUCT_TAGS, 3),
  });
}
insertAll(shop.products, products.map(({ cents, ...p }) => ({ ...p, price: money(cents) })));

const orders = [];
for (let i = 0; i < ORDERS; i++) {
  const customer = pick(customers);
  const items = [];
  let total = 0;
  for (let n = int(1, 5); n > 0; n--) {
    const p = pick(products);
    const qty = int(1, 4);
    total += p.cents * qty;
    items.push({ sku: p._id, qty, price: money(p.cents) });
  }
  const order = {
    _id: new ObjectId(),
    customer: { _id: customer._id, email: customer.email },
    total: money(total),
    placedAt: date(),
    status: pick(STATUSES),
    tags: someOf(ORDER_TAGS, 2),
    items,
    channel: pick(CHANNELS),
  };
  if (random() < 0.3) order.notes = pick(NOTES);
  orders.push(order);
}
insertAll(shop.orders, orders);

// A minute of traffic on the orders: status changes, tags, a quantity bump, a few deletes.
const ids = orders.map((o) => o._id);
const until = Date.now() + CHANGE_SECONDS * 1000;
let changes = 0;
while (Date.now() < until && ids.length > 0) {
  const roll = int(0, 99);
  const k = int(0, ids.length - 1);
  const id = ids[k];
  if (roll < 50) {
    shop.orders.updateOne({ _id: id }, { $set: { status: pick(STATUSES) } });
  } else if (roll < 75) {
    shop.orders.updateOne({ _id: id }, { $addToSet: { tags: pick(ORDER_TAGS) } });
  } else if (roll < 95) {
    shop.orders.updateOne({ _id: id }, { $inc: { "items.0.qty": 1 } });
  } else {
    shop.orders.deleteOne({ _id: id });
    ids.splice(k, 1);
  }
  changes++;
  sleep(50);
}
print(`seed: ${changes} changes to shop.orders; done.`);
