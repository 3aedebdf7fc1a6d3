"""Local brokers for the demo, the tests and the benchmarks: the embedded Tansu and Apache Kafka from its
Maven Central jars. The worker never imports this package; it only needs a bootstrap address."""
