// Placeholder while the benchmark is written.
int main() { return 0; }
