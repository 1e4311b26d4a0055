// Notebook 02's seeded replay ("2 · Seeded replay"), in JavaScript: the same update streams in the same arrival
// order. PyRandom is CPython's random.Random (MT19937, init_by_array seeding from an int) for the three calls
// the notebook makes: choice (via getrandbits), uniform and random. rtlib-query.test.mjs checks the streams
// against the notebook: the "naive" and "version_gate" rules diverge on exactly the tasks it counted.

export class PyRandom {
  constructor(seed) {
    this.mt = new Uint32Array(624);
    this.index = 624;
    this.#initByArray([seed >>> 0]); // random.Random(int): the int's 32-bit words, least significant first
  }

  #initGenrand(s) {
    const mt = this.mt;
    mt[0] = s >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  #initByArray(key) {
    const mt = this.mt;
    this.#initGenrand(19650218);
    let i = 1;
    let j = 0;
    for (let k = Math.max(624, key.length); k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(prev, 1664525)) + key[j] + j) >>> 0;
      i += 1;
      j += 1;
      if (i >= 624) { mt[0] = mt[623]; i = 1; }
      if (j >= key.length) j = 0;
    }
    for (let k = 623; k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(prev, 1566083941)) - i) >>> 0;
      i += 1;
      if (i >= 624) { mt[0] = mt[623]; i = 1; }
    }
    mt[0] = 0x80000000;
  }

  uint32() {
    const mt = this.mt;
    if (this.index >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (mt[k] & 0x80000000) | (mt[(k + 1) % 624] & 0x7fffffff);
        mt[k] = mt[(k + 397) % 624] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.index = 0;
    }
    let y = mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  random() {
    const a = this.uint32() >>> 5;
    const b = this.uint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  getrandbits(k) { // 1 <= k <= 32
    return this.uint32() >>> (32 - k);
  }

  choice(seq) {
    const k = seq.length.toString(2).length;
    let r = this.getrandbits(k);
    while (r >= seq.length) r = this.getrandbits(k);
    return seq[r];
  }

  uniform(a, b) {
    return a + (b - a) * this.random();
  }
}

export const FIELDS = ["title", "status", "assignee", "priority", "description"];
export const WINDOWS = [0, 1.5, 3, 6]; // REPLAY_WINDOWS: max delay, in update intervals
export const TRIALS = 2000; // REPLAY_TRIALS
export const SEED = 3;

/** The notebook's replay(window) streams: per trial, the 12 partial updates ({version, changes}) in arrival
 *  order, and the task's final fields (the truth). No loss (loss defeats every rule: a lost *last* update
 *  is invisible); this is the reordering the notebook calls "w=…". */
export function* streams(window, { trials = TRIALS, n = 12, seed = SEED } = {}) {
  const rng = new PyRandom(seed);
  for (let trial = 0; trial < trials; trial++) {
    const history = [];
    for (let k = 1; k <= n; k++) history.push({ [rng.choice(FIELDS)]: `${trial}.${k}` });
    const arrivals = [];
    for (let k = 1; k <= n; k++) arrivals.push([k + rng.uniform(0, window), k]);
    for (let k = 1; k <= n; k++) rng.random(); // the loss draws (loss 0: every update arrives)
    arrivals.sort((x, y) => x[0] - y[0] || x[1] - y[1]); // heapq order: (time, version)
    yield {
      trial,
      updates: arrivals.map(([, v]) => ({ version: v, changes: history[v - 1] })),
      truth: Object.assign({}, ...history),
      version: n,
    };
  }
}
