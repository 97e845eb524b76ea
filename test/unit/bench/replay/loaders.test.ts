import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  detectFormat,
  parseLog,
  parseMovieLensItems,
  parseTs,
} from '../../../../bench/replay/loaders.js';

describe('replay loaders', () => {
  it('MovieLens u.data: tab-separated user item rating ts; rating >= 4 is a like', () => {
    const text =
      '196\t242\t3\t881250949\n186\t302\t4\t891717742\n22\t377\t1\t878887116\nbad line\n';
    assert.equal(detectFormat(text), 'movielens-tab');
    const log = parseLog(text, 'u.data');
    assert.equal(log.skipped, 1);
    assert.deepEqual(log.events, [
      { user: '196', item: '242', ts: 881250949000, type: 'view', value: 3 },
      { user: '186', item: '302', ts: 891717742000, type: 'like', value: 4 },
      { user: '22', item: '377', ts: 878887116000, type: 'view', value: 1 },
    ]);
  });

  it('MovieLens ratings.dat: ::-separated', () => {
    const text = '1::1193::5::978300760\r\n1::661::3::978302109\r\n';
    assert.equal(detectFormat(text), 'movielens-dat');
    const log = parseLog(text, 'ratings.dat');
    assert.deepEqual(
      log.events.map((e) => [e.user, e.item, e.ts, e.type]),
      [
        ['1', '1193', 978300760000, 'like'],
        ['1', '661', 978302109000, 'view'],
      ],
    );
  });

  it('OTTO JSON Lines: session = user, clicks/carts/orders mapped', () => {
    const text = [
      '{"session":0,"events":[{"aid":1517085,"ts":1659304800025,"type":"clicks"},{"aid":16246,"ts":1659367719997,"type":"carts"}]}',
      '{"session":1,"events":[{"aid":424964,"ts":1659304800025,"type":"orders"},{"aid":5,"ts":1,"type":"nonsense"}]}',
    ].join('\n');
    assert.equal(detectFormat(text), 'otto-jsonl');
    const log = parseLog(text, 'train.jsonl');
    assert.equal(log.skipped, 1);
    assert.deepEqual(
      log.events.map((e) => [e.user, e.item, e.ts, e.type]),
      [
        ['0', '1517085', 1659304800025, 'click'],
        ['0', '16246', 1659367719997, 'add_to_cart'],
        ['1', '424964', 1659304800025, 'purchase'],
      ],
    );
  });

  it('CSV by header name (RetailRocket shape): types, categories, bad rows skipped', () => {
    const text = [
      'timestamp,visitorid,event,itemid,transactionid,categoryid',
      '1433221332117,257597,view,355908,,1016',
      '1433224214164,992329,addtocart,248676,,9',
      '1433221955914,483717,transaction,253185,4000,',
      'not-a-time,1,view,2,,',
      '1433221955915,483717,something,253185,,',
    ].join('\n');
    assert.equal(detectFormat(text), 'csv');
    const log = parseLog(text, 'events.csv');
    assert.equal(log.skipped, 1);
    assert.deepEqual(
      log.events.map((e) => [e.user, e.item, e.type]),
      [
        ['257597', '355908', 'view'],
        ['992329', '248676', 'add_to_cart'],
        ['483717', '253185', 'purchase'],
        ['483717', '253185', 'view'],
      ],
    );
    assert.deepEqual(
      [...log.categories],
      [
        ['355908', '1016'],
        ['248676', '9'],
      ],
    );
  });

  it('CSV by header name (REES46 shape): UTC times, cart, remove_from_cart and a cut last row skipped', () => {
    const text = [
      'event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session',
      '2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3-4e00-8c23-a032dfed738c',
      '2019-10-01 00:00:14 UTC,cart,1005014,2053013555631882655,electronics.smartphone,samsung,503.09,533326659,6b928be2-2bce-4640-8296-0efdf2fda22a',
      '2019-10-01 00:00:41 UTC,purchase,13200605,2053013557192163841,furniture.bedroom.bed,,566.30,559368633,d6034fa2-41fb-4ac0-9051-55ea9fc9147a',
      '2019-10-01 00:00:42 UTC,remove_from_cart,1005014,2053013555631882655,electronics.smartphone,samsung,503.09,533326659,6b928be2-2bce-4640-8296-0efdf2fda22a',
      '2019-10-01 02:50:00 UTC,view,10900305,2053013555069845885,appliances.kitchen.mixer,elenberg,25.71,52040330',
    ].join('\r\n');
    assert.equal(detectFormat(text), 'csv');
    const log = parseLog(text, '2019-Oct.csv');
    assert.equal(log.skipped, 2);
    assert.deepEqual(
      log.events.map((e) => [e.user, e.item, e.ts, e.type]),
      [
        ['541312140', '44600062', Date.parse('2019-10-01T00:00:00Z'), 'view'],
        ['533326659', '1005014', Date.parse('2019-10-01T00:00:14Z'), 'add_to_cart'],
        ['559368633', '13200605', Date.parse('2019-10-01T00:00:41Z'), 'purchase'],
      ],
    );
    assert.equal(log.categories.get('1005014'), '2053013555631882655');
  });

  it('CSV with a rating column and no type: like by rating; ISO times; ids cleaned', () => {
    const text =
      'userId,movieId,rating,timestamp\nu 1,m/2,4.5,2015-03-01T10:00:00Z\nu2,m3,2,964982703\n';
    const log = parseLog(text, 'ratings.csv');
    assert.deepEqual(log.events, [
      {
        user: 'u_1',
        item: 'm_2',
        ts: Date.parse('2015-03-01T10:00:00Z'),
        type: 'like',
        value: 4.5,
      },
      { user: 'u2', item: 'm3', ts: 964982703000, type: 'view', value: 2 },
    ]);
  });

  it('CSV without a user column names the aliases it looked for', () => {
    assert.throws(() => parseLog('foo,item,ts\n1,2,3\n', 'x.csv'), /no user column/);
  });

  it('timestamps: seconds, ms, ISO', () => {
    assert.equal(parseTs('881250949'), 881250949000);
    assert.equal(parseTs('1433221332117'), 1433221332117);
    assert.equal(parseTs('1970-01-01T00:00:01Z'), 1000);
    assert.ok(Number.isNaN(parseTs('')));
  });

  it('MovieLens u.item: the first genre set is categoryL1', () => {
    const flags = (set: number[]): string =>
      Array.from({ length: 19 }, (_, i) => (set.includes(i) ? '1' : '0')).join('|');
    const text = [
      `1|Toy Story (1995)|01-Jan-1995||http://x|${flags([3, 4, 5])}`,
      `2|GoldenEye (1995)|01-Jan-1995||http://x|${flags([1, 2, 16])}`,
      `267|unknown||||${flags([0])}`,
      `9|Dead Man Walking (1995)|01-Jan-1995||http://x|${flags([])}`,
    ].join('\n');
    assert.deepEqual(
      [...parseMovieLensItems(text)],
      [
        ['1', 'Animation'],
        ['2', 'Action'],
        ['267', 'unknown'],
        ['9', 'unknown'],
      ],
    );
  });
});
