/* The raw peer for the gradient-synchronisation benchmark: MPI_Allreduce (in place, float sum)
 * of N floats, as a C program would call it. Each repetition starts after a barrier, like the
 * trainer's reduction, and rank 0 prints the mean milliseconds as JSON.
 *
 *   mpicc -O2 -o raw_allreduce bench/raw_allreduce.c && mpirun -n 2 ./raw_allreduce 8077826 10
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc != 3) {
        if (rank == 0) fprintf(stderr, "usage: raw_allreduce FLOATS REPS\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    long n = atol(argv[1]);
    int reps = atoi(argv[2]);
    float *buf = malloc((size_t)n * sizeof(float));
    if (!buf) MPI_Abort(MPI_COMM_WORLD, 1);
    for (long i = 0; i < n; i++) buf[i] = 1.0f;
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); /* warm-up */
    double total = 0.0;
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        total += MPI_Wtime() - t0;
    }
    if (rank == 0)
        printf("{\"ranks\": %d, \"floats\": %ld, \"reps\": %d, \"mean_ms\": %.3f}\n", size, n, reps, 1e3 * total / reps);
    free(buf);
    MPI_Finalize();
    return 0;
}
