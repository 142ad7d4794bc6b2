//! Search's ranking engine: a tantivy index in memory over the database's search rows, one
//! document per channel and product, in every process.
//!
//! Why in process and not the databases' own full-text engines: FTS5's `bm25` and
//! PostgreSQL's `ts_rank` score every match before the first page comes back, so a word found
//! in every one of 100k products took 1–2 s. Tantivy keeps only the top of the page (a heap
//! over matches it scores from compressed postings), and filters and sorts on columns of its
//! own. The rows stay the truth: this index is rebuilt from them at start and follows them by
//! `indexed_seq`, so it is never the only copy of anything.
//!
//! Words match as prefixes ("coff" finds "coffee"), as they did with FTS5's `"word"*`: every
//! prefix of every word is indexed (up to [`PREFIX_CHARS_MAX`] characters), folded to ASCII and
//! lower case, in one field per source so a match in the name outranks one in the description.

use super::{SearchHit, SearchPage, SearchQuery, Sort};
use crate::{CatalogError, Result};
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use store::{Backend, Db};
use tantivy::collector::TopDocs;
use tantivy::collector::sort_key::{SortByStaticFastValue, SortByString};
use tantivy::query::{BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, TextAnalyzer, WhitespaceTokenizer};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

/// The tokenizer of the prefix fields: the text is prefixes separated by spaces already.
const PREFIXES: &str = "prefixes";

/// Longest prefix indexed; a longer query word is cut to it.
pub const PREFIX_CHARS_MAX: usize = 24;

/// The writer's indexing memory (one thread): a full rebuild of 100k products fits in a few
/// flushes.
const WRITER_MEMORY_BYTES: usize = 64 << 20;

/// The searchable sources and their weight in the ranking (FTS5's bm25 weights before).
const SOURCES: [(&str, f32); 4] =
    [("name_words", 10.0), ("category_words", 4.0), ("description_words", 2.0), ("attributes_words", 1.0)];

impl From<tantivy::TantivyError> for CatalogError {
    fn from(error: tantivy::TantivyError) -> Self {
        CatalogError::SearchIndex(error.to_string())
    }
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    handle: Field,
    channel: Field,
    sources: [Field; 4],
    /// The category and each of its ancestors (`apparel`, `apparel/tops`).
    category_path: Field,
    price: Field,
    /// The handle's first 8 bytes, big-endian: a tie-break that costs a number compare.
    handle_key: Field,
    priced: Field,
    in_stock: Field,
    name: Field,
    category: Field,
    /// The product's variants as JSON, for the page: a search reads nothing from the database.
    variants: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer(PREFIXES).set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        handle: builder.add_text_field("handle", STRING | STORED | FAST),
        channel: builder.add_text_field("channel", STRING),
        sources: SOURCES.map(|(name, _)| builder.add_text_field(name, words.clone())),
        category_path: builder.add_text_field("category_path", STRING),
        price: builder.add_i64_field("price", INDEXED | FAST | STORED),
        handle_key: builder.add_u64_field("handle_key", FAST),
        priced: builder.add_u64_field("priced", INDEXED),
        in_stock: builder.add_u64_field("in_stock", INDEXED | STORED),
        name: builder.add_text_field("name", STORED),
        category: builder.add_text_field("category", STORED),
        variants: builder.add_text_field("variants", STORED),
    };
    (builder.build(), fields)
}

/// One row of the database's search tables: a product and one of its channel offers (none
/// when the product is in no channel yet).
#[derive(Debug, sqlx::FromRow)]
struct Row {
    handle: String,
    name: String,
    description: Option<String>,
    category: Option<String>,
    attributes_text: String,
    channel: Option<String>,
    price_from_minor: Option<i64>,
    in_stock: Option<i64>,
}

/// The in-process search index. Cheap to clone; one writer (the follower) at a time.
#[derive(Clone)]
pub struct SearchIndex {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    index: Index,
    fields: Fields,
    reader: IndexReader,
    writer: Mutex<IndexWriter<TantivyDocument>>,
    /// The subscriber offset the index reflects; -1 before the first load.
    applied: AtomicI64,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").field("applied_seq", &self.applied_seq()).finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// An empty index over `db`'s rows; [`SearchIndex::catch_up`] loads them.
    pub fn new(db: Db) -> Result<Self> {
        let (schema, fields) = schema();
        let index = Index::create_in_ram(schema);
        index.tokenizers().register(
            PREFIXES,
            TextAnalyzer::builder(WhitespaceTokenizer::default()).filter(LowerCaser).filter(AsciiFoldingFilter).build(),
        );
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                index,
                fields,
                reader,
                writer: Mutex::new(writer),
                applied: AtomicI64::new(-1),
            }),
        })
    }

    /// The last event `seq` the index reflects (0 before the first load).
    pub fn applied_seq(&self) -> i64 {
        self.inner.applied.load(Ordering::Acquire).max(0)
    }

    /// Applies the rows the `search-index` subscriber wrote since the last call (all of them
    /// the first time), read in one snapshot with its offset. Returns how many rows it read.
    pub async fn catch_up(&self) -> Result<usize> {
        let applied = self.inner.applied.load(Ordering::Acquire);
        let mut tx = self.inner.db.reader().begin().await?;
        if self.inner.db.backend() == Backend::Postgres {
            // One snapshot for the offset and the rows (SQLite's read transaction is one).
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
        }
        let upto = super::rows_seq(&mut tx).await?;
        if applied >= 0 && upto <= applied {
            tx.rollback().await?;
            return Ok(0);
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT p.handle, p.name, p.description, p.category, p.attributes_text, \
             o.channel, o.price_from_minor, o.in_stock \
             FROM search_products p LEFT JOIN search_offers o ON o.handle = p.handle \
             WHERE p.indexed_seq > $1 AND p.indexed_seq <= $2",
        )
        .bind(applied)
        .bind(upto)
        .fetch_all(&mut *tx)
        .await?;
        let handles: Vec<String> = rows.iter().map(|r| r.handle.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let variants = super::variants_in(&mut tx, &handles).await?;
        tx.rollback().await?;
        let read = rows.len();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.apply(rows, variants, upto))
            .await
            .map_err(|e| CatalogError::SearchIndex(format!("the indexing task failed: {e}")))??;
        metrics::gauge!("stockroom_search_applied_seq").set(upto as f64);
        metrics::counter!("stockroom_search_rows_indexed_total").increment(read as u64);
        Ok(read)
    }

    /// A page of results, with the variants of its products from the database.
    pub async fn search(&self, query: &SearchQuery, currency: &kernel::Currency) -> Result<SearchPage> {
        let inner = self.inner.clone();
        let owned = query.clone();
        let (found, as_of_seq) = tokio::task::spawn_blocking(move || inner.top(&owned))
            .await
            .map_err(|e| CatalogError::SearchIndex(format!("the search task failed: {e}")))??;
        let more = found.len() > query.limit as usize;
        let items: Vec<SearchHit> = found
            .into_iter()
            .take(query.limit as usize)
            .map(|f| SearchHit {
                handle: f.handle,
                name: f.name,
                category: f.category,
                price_from: f.price_minor.map(|p| currency.format_amount(p)),
                in_stock: f.in_stock,
                variants: f.variants,
            })
            .collect();
        let next_offset = query.offset + items.len();
        let next = (more && next_offset <= super::SEARCH_OFFSET_MAX)
            .then(|| kernel::page::encode_cursor(&next_offset.to_string()));
        Ok(SearchPage { items, next, as_of_seq })
    }
}

/// A hit as the index stores it.
struct Found {
    handle: String,
    name: String,
    category: Option<String>,
    price_minor: Option<i64>,
    in_stock: bool,
    variants: Vec<super::SearchVariant>,
}

impl Inner {
    fn apply(
        &self,
        rows: Vec<Row>,
        variants: std::collections::HashMap<String, Vec<super::SearchVariant>>,
        upto: i64,
    ) -> Result<()> {
        if !rows.is_empty() {
            let f = self.fields;
            let mut writer =
                self.writer.lock().map_err(|_| CatalogError::SearchIndex("the index writer panicked".into()))?;
            // A changed product's documents are all rewritten: its offers in every channel.
            let handles: BTreeSet<&str> = rows.iter().map(|r| r.handle.as_str()).collect();
            for handle in handles {
                writer.delete_term(Term::from_field_text(f.handle, handle));
            }
            for row in &rows {
                let Some(channel) = &row.channel else { continue };
                let mut doc = TantivyDocument::new();
                doc.add_text(f.handle, &row.handle);
                doc.add_u64(f.handle_key, handle_key(&row.handle));
                doc.add_text(f.channel, channel);
                let sources = [
                    Some(row.name.as_str()),
                    row.category.as_deref().map(|c| c.split('/').collect::<Vec<_>>().join(" ")).as_deref(),
                    row.description.as_deref(),
                    Some(row.attributes_text.as_str()),
                ]
                .map(|text| text.map(|t| prefixes(&channel_tag(channel), t)).unwrap_or_default());
                for (field, text) in f.sources.iter().zip(sources) {
                    doc.add_text(*field, text);
                }
                if let Some(category) = &row.category {
                    for (at, _) in category.match_indices('/') {
                        doc.add_text(f.category_path, &category[..at]);
                    }
                    doc.add_text(f.category_path, category);
                    doc.add_text(f.category, category);
                }
                if let Some(price) = row.price_from_minor {
                    doc.add_i64(f.price, price);
                    doc.add_u64(f.priced, 1);
                }
                doc.add_u64(f.in_stock, u64::from(row.in_stock == Some(1)));
                doc.add_text(f.name, &row.name);
                let of_product = variants.get(&row.handle).map(Vec::as_slice).unwrap_or_default();
                doc.add_text(f.variants, serde_json::to_string(of_product).expect("variants serialize"));
                writer.add_document(doc)?;
            }
            writer.commit()?;
            self.reader.reload()?;
        }
        self.applied.store(upto, Ordering::Release);
        Ok(())
    }

    /// Up to `limit + 1` hits from `offset`, and the `seq` they reflect.
    fn top(&self, query: &SearchQuery) -> Result<(Vec<Found>, i64)> {
        // Read before the searcher: a reload between the two can only make the page newer
        // than it says.
        let as_of_seq = self.applied.load(Ordering::Acquire).max(0);
        let searcher = self.reader.searcher();
        let f = self.fields;
        let filter =
            |q: Box<dyn Query>| -> (Occur, Box<dyn Query>) { (Occur::Must, Box::new(ConstScoreQuery::new(q, 0.0))) };
        let term = |t: Term| -> Box<dyn Query> { Box::new(TermQuery::new(t, IndexRecordOption::Basic)) };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut analyzer = self.index.tokenizer_for_field(f.sources[0])?;
        let mut ranked = false;
        for word in query.text.as_deref().map(super::words).unwrap_or_default() {
            let cut: String = word.chars().take(PREFIX_CHARS_MAX).collect();
            // The channel is part of every indexed word: one word's query is a pure
            // disjunction of terms, which tantivy scores with block-max WAND.
            let qualified = format!("{}{CHANNEL_MARK}{cut}", channel_tag(query.channel.as_str()));
            let mut stream = analyzer.token_stream(&qualified);
            while let Some(token) = stream.next() {
                // Each word must match, in any source; its sources add up, by weight.
                let either: Vec<(Occur, Box<dyn Query>)> = f
                    .sources
                    .iter()
                    .zip(SOURCES)
                    .map(|(field, (_, weight))| {
                        let matched =
                            TermQuery::new(Term::from_field_text(*field, &token.text), IndexRecordOption::WithFreqs);
                        (Occur::Should, Box::new(BoostQuery::new(Box::new(matched), weight)) as Box<dyn Query>)
                    })
                    .collect();
                clauses.push((Occur::Must, Box::new(BooleanQuery::new(either))));
                ranked = true;
            }
        }
        if !ranked {
            clauses.push(filter(term(Term::from_field_text(f.channel, query.channel.as_str()))));
        }
        if let Some(category) = &query.category {
            clauses.push(filter(term(Term::from_field_text(f.category_path, category))));
        }
        if query.in_stock {
            clauses.push(filter(term(Term::from_field_u64(f.in_stock, 1))));
        }
        if query.min_price_minor.is_some() || query.max_price_minor.is_some() {
            let bound =
                |b: Option<i64>| b.map_or(Bound::Unbounded, |p| Bound::Included(Term::from_field_i64(f.price, p)));
            let range = RangeQuery::new(bound(query.min_price_minor), bound(query.max_price_minor));
            clauses.push(filter(Box::new(range)));
        }
        if query.sort != Sort::Relevance {
            clauses.push(filter(term(Term::from_field_u64(f.priced, 1))));
        }
        // One clause alone is the query itself, so a single word stays a pure disjunction.
        let wanted: Box<dyn Query> = if clauses.len() == 1 {
            clauses.pop().expect("one clause").1
        } else {
            Box::new(BooleanQuery::new(clauses))
        };
        let top = TopDocs::with_limit(query.limit as usize + 1).and_offset(query.offset);
        let by_handle = |order| (SortByString::for_field("handle"), order);
        let by_price = |order| (SortByStaticFastValue::<i64>::for_field("price"), order);
        // Price sorts visit every match: ties by the handle's first 8 bytes (a number), then
        // by index order, instead of by the handle itself (a string per match).
        let by_handle_key = |order| (SortByStaticFastValue::<u64>::for_field("handle_key"), order);
        let addresses: Vec<DocAddress> = match query.sort {
            // Equal scores keep the index's order: a tie-break on the handle would cost the
            // pruning that makes a common word fast.
            Sort::Relevance if ranked => {
                searcher.search(wanted.as_ref(), &top.order_by_score())?.into_iter().map(|(_, a)| a).collect()
            }
            Sort::Relevance => searcher
                .search(wanted.as_ref(), &top.order_by(by_handle(Order::Asc)))?
                .into_iter()
                .map(|(_, a)| a)
                .collect(),
            Sort::PriceAsc => searcher
                .search(&wanted, &top.order_by((by_price(Order::Asc), by_handle_key(Order::Asc))))?
                .into_iter()
                .map(|(_, a)| a)
                .collect(),
            Sort::PriceDesc => searcher
                .search(&wanted, &top.order_by((by_price(Order::Desc), by_handle_key(Order::Desc))))?
                .into_iter()
                .map(|(_, a)| a)
                .collect(),
        };
        let mut found = Vec::with_capacity(addresses.len());
        for address in addresses {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field| doc.get_first(field).and_then(|v| v.as_str().map(str::to_owned));
            found.push(Found {
                handle: text(f.handle).unwrap_or_default(),
                name: text(f.name).unwrap_or_default(),
                category: text(f.category),
                price_minor: doc.get_first(f.price).and_then(|v| v.as_i64()),
                in_stock: doc.get_first(f.in_stock).and_then(|v| v.as_u64()) == Some(1),
                variants: text(f.variants).and_then(|v| serde_json::from_str(&v).ok()).unwrap_or_default(),
            });
        }
        Ok((found, as_of_seq))
    }
}

/// The first 8 bytes of `handle`, big-endian, zero-padded: orders as the handles do up to
/// their eighth byte.
fn handle_key(handle: &str) -> u64 {
    let mut bytes = [0u8; 8];
    for (slot, b) in bytes.iter_mut().zip(handle.bytes()) {
        *slot = b;
    }
    u64::from_be_bytes(bytes)
}

/// The channel in an indexed term: its bytes in hex, which lower-casing and folding leave
/// as they are (codes are case-sensitive: `WEB` is not `web`).
fn channel_tag(channel: &str) -> String {
    kernel::page::encode_cursor(channel)
}

/// Between a channel and a word in an indexed term (never in either).
const CHANNEL_MARK: char = '\u{1f}';

/// Every prefix of every word of `text` (up to [`PREFIX_CHARS_MAX`] characters), each after
/// the channel, separated by spaces.
fn prefixes(channel: &str, text: &str) -> String {
    let mut out = String::new();
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        for (at, c) in word.char_indices().take(PREFIX_CHARS_MAX) {
            out.push_str(channel);
            out.push(CHANNEL_MARK);
            out.push_str(&word[..at + c.len_utf8()]);
            out.push(' ');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::prefixes;

    #[test]
    fn handle_keys_order_as_the_handles_up_to_eight_bytes() {
        use super::handle_key;
        assert!(handle_key("a") < handle_key("ab"));
        assert!(handle_key("mug") < handle_key("tee"));
        assert!(handle_key("abcdefgh") < handle_key("abcdefgi"));
        assert_eq!(handle_key("abcdefgh1"), handle_key("abcdefgh2"));
    }

    #[test]
    fn every_prefix_of_every_word_is_indexed_up_to_the_cap() {
        assert_eq!(
            prefixes("w", "Tee-shirt"),
            "w\u{1f}T w\u{1f}Te w\u{1f}Tee w\u{1f}s w\u{1f}sh w\u{1f}shi w\u{1f}shir w\u{1f}shirt "
        );
        assert_eq!(prefixes("w", "café"), "w\u{1f}c w\u{1f}ca w\u{1f}caf w\u{1f}café ");
        let long = "a".repeat(40);
        assert_eq!(prefixes("w", &long).split(' ').filter(|p| !p.is_empty()).count(), super::PREFIX_CHARS_MAX);
    }
}
