/* The one MPI call rsmpi's safe API lacks: an in-place all-reduce (no second gradient-sized
 * buffer). MPI_IN_PLACE is implementation-defined (Open MPI: (void *)1, MPICH: (void *)-1) and
 * rsmpi does not export it, so the call lives here, compiled against the same mpi.h.
 * Returns the MPI error code (MPI_SUCCESS = 0). */
#include <mpi.h>

int wave_comm_allreduce_sum_f32_in_place(float *buf, int count) {
    return MPI_Allreduce(MPI_IN_PLACE, buf, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}
